"""Locust scenario hammering only /hello/ with no think time, to measure raw per-request overhead."""
from __future__ import annotations

from locust import FastHttpUser, constant, task

import lab_window
import labtls


class HelloHammer(FastHttpUser):
    """Requests /hello/ back to back: no database, no template, no static files."""

    wait_time = constant(0)
    connection_timeout = 5.0
    insecure = labtls.INSECURE
    ssl_context_factory = labtls.context_factory
    network_timeout = 15.0

    def on_start(self) -> None:
        lab_window.user_ready()

    @task
    def hello(self) -> None:
        lab_window.hold()
        self.client.get("/hello/", name="/hello/ (no db)")
