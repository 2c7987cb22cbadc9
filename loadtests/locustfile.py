"""Default Locust scenario: a realistic mix over the bank site (pages, DB-backed views, static files, a login and a transfer)."""
from __future__ import annotations

import os
import re
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


class BankCustomer(FastHttpUser):
    """A signed-in customer: logs in (CSRF-protected form) and moves a cent between two accounts and back.

    Only active when the lab passes the demo user's password (LAB_DEMO_PASSWORD): `lab bench` does.
    """

    abstract = not os.environ.get("LAB_DEMO_PASSWORD")
    weight = 1
    wait_time = lab_wait_time()
    connection_timeout = 5.0
    network_timeout = 15.0

    def _csrf_token(self, path: str, name: str) -> str:
        with self.client.get(path, name=name, catch_response=True) as response:
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', response.text or "")
            if not token:
                response.failure(f"no CSRF token on {path}")
                return ""
            return token.group(1)

    def on_start(self) -> None:
        # "start: " marks start-up requests: lab bench counts its steady state from when they are all done
        token = self._csrf_token("/accounts/login/", "start: /accounts/login/ (form)")
        with self.client.post(
            "/accounts/login/",
            data={"username": "demo", "password": os.environ.get("LAB_DEMO_PASSWORD", ""), "csrfmiddlewaretoken": token},
            name="start: /accounts/login/ (POST)", catch_response=True,
        ) as response:
            if 'name="password"' in (response.text or ""):  # the form again: the password was refused
                response.failure("login refused for user demo")

    @task
    def transfer_a_cent_and_back(self) -> None:
        for source, target in (("AC00001", "AC00002"), ("AC00002", "AC00001")):
            token = self._csrf_token("/transfer/", "/transfer/ (form)")
            with self.client.post(
                "/transfer/",
                data={"from_account": source, "to_account": target, "amount": "0.01", "csrfmiddlewaretoken": token},
                name="/transfer/ (POST, csrf)", catch_response=True,
            ) as response:
                # Success redirects to the balance sheet with a "Transferred ..." message; every page has
                # "Balance sheet" in its menu, the login page included, so only the message proves it.
                if "Transferred" not in (response.text or ""):
                    response.failure("transfer not confirmed")
