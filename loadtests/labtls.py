"""TLS for the bench's Locust users: with LAB_CA_FILE set (an https cell), verify the site against the lab's own CA."""
from __future__ import annotations

import os
import ssl
from typing import Callable

CA_FILE = os.environ.get("LAB_CA_FILE") or None
INSECURE = False  # never skip verification: plain http needs none, https is checked against the lab's CA


def _lab_ca_context(cafile: str | None = None, **_: object) -> ssl.SSLContext:
    # geventhttpclient passes its own cafile (none here): the lab's CA is the one that signed lb1's certificate.
    return ssl.create_default_context(cafile=CA_FILE)


context_factory: Callable[..., ssl.SSLContext] | None = _lab_ca_context if CA_FILE else None
