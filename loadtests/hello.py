"""Locust scenario hammering only /hello/ with no think time, to measure raw per-request overhead."""
from __future__ import annotations

from locust import FastHttpUser, constant, task


class HelloHammer(FastHttpUser):
    """Requests /hello/ back to back: no database, no template, no static files."""

    wait_time = constant(0)
    connection_timeout = 5.0
    network_timeout = 15.0

    @task
    def hello(self) -> None:
        self.client.get("/hello/", name="/hello/ (no db)")
