"""Middleware that stamps every response with the name of the host that served it."""
import socket


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
