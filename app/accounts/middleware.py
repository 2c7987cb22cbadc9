"""Middleware: stamp every response with the name of the host that served it; believe X-Forwarded-Proto only from
the site's own balancers."""
import socket

from django.conf import settings


class ServedByMiddleware:
    """Add ``X-Served-By: <hostname>`` so a client behind the load balancer can tell the web hosts apart."""

    def __init__(self, get_response):
        self.get_response = get_response
        # Looked up once per worker: it does not change under a running process,
        # and /hello/ is used to measure per-request overhead.
        self.hostname = socket.gethostname()

    def __call__(self, request):
        response = self.get_response(request)
        response["X-Served-By"] = self.hostname
        return response


class TrustedProxyMiddleware:
    """Drop ``X-Forwarded-Proto`` from requests that did not come from a trusted proxy (``BANK_TRUSTED_PROXIES``).

    SECURE_PROXY_SSL_HEADER makes Django believe that header: from anyone else it could make a plain-HTTP request
    pass as HTTPS (no redirect, a Secure cookie sent in clear). The firewall already lets only the balancers reach
    the app server; this holds even where it does not.
    """

    def __init__(self, get_response):
        self.get_response = get_response
        self.trusted = frozenset(settings.BANK_TRUSTED_PROXIES)

    def __call__(self, request):
        if request.META.get("REMOTE_ADDR") not in self.trusted:
            request.META.pop("HTTP_X_FORWARDED_PROTO", None)
        return self.get_response(request)
