"""Default Locust scenario: a realistic browsing mix over the bank site (pages, DB-backed views, static files)."""
from __future__ import annotations

import os
from typing import Callable

from locust import FastHttpUser, between, constant, task


def lab_wait_time() -> Callable[..., float]:
    """The think time between tasks: between(0.1, 0.5) s, or LAB_WAIT seconds flat (LAB_WAIT=0: none)."""
    raw = os.environ.get("LAB_WAIT", "").strip()
    if not raw:
        return between(0.1, 0.5)
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if seconds < 0:
        # Raised at import so Locust refuses to start instead of silently using a default.
        raise ValueError(f"LAB_WAIT must be a number of seconds >= 0, got {raw!r}")
    return constant(seconds)


class SiteVisitor(FastHttpUser):
    """An anonymous visitor reading the public pages, with the weights of a typical session."""

    wait_time = lab_wait_time()
    # Short enough that a hung backend shows up as failures within a short run
    # rather than as requests that silently never finish.
    connection_timeout = 5.0
    network_timeout = 15.0

    @task(3)
    def home(self) -> None:
        self.client.get("/", name="/ (home)")

    @task(3)
    def balance(self) -> None:
        self.client.get("/balance/", name="/balance/ (db, cached)")

    @task(1)
    def report(self) -> None:
        self.client.get("/report/", name="/report/ (db)")

    @task(2)
    def stylesheet(self) -> None:
        # The unhashed name: collectstatic with ManifestStaticFilesStorage keeps the
        # original next to the hashed copy, so this path is stable across deploys
        # and is still served by nginx straight from STATIC_ROOT.
        self.client.get("/static/accounts/site.css", name="/static/accounts/site.css (nginx)")

    @task(1)
    def hello(self) -> None:
        self.client.get("/hello/", name="/hello/ (no db)")
