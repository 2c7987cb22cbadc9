"""Default Locust scenario: a realistic mix over the bank site (pages, DB-backed views, static files, signed-in transfers)."""
from __future__ import annotations

import os
import random
from itertools import count
from typing import Any, Callable

import gevent
from locust import FastHttpUser, between, constant, task
from locust.runners import WorkerRunner

import bankpages
import lab_window
import labtls

_users_here = count()
# The balancer answers 429 beyond 5 login POSTs/s per client address (burst 20): every user of a bench comes from
# one address, so a user turned away waits a moment (spread, so they do not all come back together) and tries again.
LOGIN_RETRY_WAIT_S = (0.3, 1.5)
TOO_MANY_REQUESTS = 429


def answered(response: Any) -> bool:
    """An HTTP answer below 400. FastHttpUser's response to a refused, reset or timed-out connection has status 0,
    which its `ok` calls fine: a check that then reads the empty page would replace Locust's own reason (the
    connection refused) with its own ("no CSRF token"), as a trial's balancer failover showed."""
    return 0 < response.status_code < 400


def referer(user: FastHttpUser, path: str) -> dict[str, str]:
    """The header Django's CSRF check wants on an HTTPS POST: a Referer on the site itself."""
    return {"Referer": f"{user.host.rstrip('/')}{path}"}


def client_timeouts() -> tuple[float, float]:
    """(connect and TLS handshake, whole answer) seconds: 5 and 15, short enough that a hung backend shows up as
    failures within a short bench run rather than as requests that silently never finish; or LAB_CLIENT_TIMEOUT_S
    for both (the rollout tests give the stack's own request timeout: a request the stack answers late, as a whole
    busy machine does, is not one it failed)."""
    raw = os.environ.get("LAB_CLIENT_TIMEOUT_S", "").strip()
    if not raw:
        return 5.0, 15.0
    try:
        seconds = float(raw)
    except ValueError:
        seconds = 0.0
    if seconds <= 0:
        raise ValueError(f"LAB_CLIENT_TIMEOUT_S must be a number of seconds > 0, got {raw!r}")
    return seconds, seconds


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


def customer_name(runner: object) -> str:
    """customer%04d for the k-th user of the whole run (k from 1), across Locust worker processes (LAB_WORKERS)."""
    workers = int(os.environ.get("LAB_WORKERS", "1"))
    index = runner.worker_index if isinstance(runner, WorkerRunner) else 0
    return f"customer{next(_users_here) * workers + index + 1:04d}"


class SiteVisitor(FastHttpUser):
    """An anonymous visitor reading the public pages, with the weights of a typical session."""

    wait_time = lab_wait_time()
    connection_timeout, network_timeout = client_timeouts()
    insecure = labtls.INSECURE
    ssl_context_factory = labtls.context_factory

    def on_start(self) -> None:
        lab_window.user_ready()

    @task(3)
    def home(self) -> None:
        lab_window.hold()
        self.client.get("/", name="/ (home)")

    @task(3)
    def balance(self) -> None:
        lab_window.hold()
        self.client.get("/balance/", name="/balance/ (db, cached)")

    @task(1)
    def report(self) -> None:
        lab_window.hold()
        self.client.get("/report/", name="/report/ (db)")

    @task(2)
    def stylesheet(self) -> None:
        lab_window.hold()
        # The unhashed name: collectstatic with ManifestStaticFilesStorage keeps the
        # original next to the hashed copy, so this path is stable across deploys
        # and is still served by nginx straight from STATIC_ROOT.
        self.client.get("/static/accounts/site.css", name="/static/accounts/site.css (nginx)")

    @task(1)
    def hello(self) -> None:
        lab_window.hold()
        self.client.get("/hello/", name="/hello/ (no db)")


class BankCustomer(FastHttpUser):
    """A signed-in customer: signs in once, then moves a cent between its own two accounts and reads its balances.

    Only active when the lab passes the demo password (LAB_DEMO_PASSWORD): `lab bench` does. With LAB_CUSTOMERS=1
    (the site holds customer0001 ... one per user, two accounts each) user k signs in as customer%04d and uses its
    own accounts, so no two users contend for the same rows; without it every user is `demo` on AC00001/AC00002.
    After each confirmed transfer it reads /balance/ and counts a stale read when the source account's balance is
    not the one the confirmation showed (the shared-nothing lesson: a per-process cache at web=2 serves old copies).
    """

    abstract = not os.environ.get("LAB_DEMO_PASSWORD")
    weight = 1
    wait_time = lab_wait_time()
    connection_timeout, network_timeout = client_timeouts()
    insecure = labtls.INSECURE
    ssl_context_factory = labtls.context_factory
    accounts: list[str]
    username: str
    signed_in: bool
    ready_once: bool

    def on_start(self) -> None:
        self.username = customer_name(self.environment.runner) if os.environ.get("LAB_CUSTOMERS") == "1" else "demo"
        self.accounts = ["AC00001", "AC00002"] if self.username == "demo" else []
        self.signed_in = False
        self.ready_once = False
        self._sign_in()

    def _sign_in(self) -> None:
        """Sign in; only a user that did counts as ready (a refused or timed-out login is tried again)."""
        # "start: " marks start-up requests: lab bench's steady state begins once every user is signed in
        with self.client.get("/accounts/login/", name="start: /accounts/login/ (form)", catch_response=True) as form:
            if not answered(form):
                return  # Locust has counted the failure with its own reason
            token = bankpages.csrf_token(form.text or "")
            if not token:
                form.failure("no CSRF token on the login form")
                return
        with self.client.post(
            "/accounts/login/",
            data={"username": self.username, "password": os.environ.get("LAB_DEMO_PASSWORD", ""),
                  "csrfmiddlewaretoken": token},
            headers=referer(self, "/accounts/login/"), name="start: /accounts/login/ (POST)", catch_response=True,
        ) as response:
            if response.status_code == TOO_MANY_REQUESTS:
                # Paced by the balancer, not refused by the site: part of start-up, not a failure.
                response.success()
                gevent.sleep(random.uniform(*LOGIN_RETRY_WAIT_S))
                return
            if not answered(response):
                return  # Locust has counted the failure
            if bankpages.is_sign_in_page(response.text or ""):  # the form again: the password was refused
                response.failure(f"login refused for user {self.username}")
                return
        self.signed_in = True
        if not self.ready_once:  # a user signed in again (after a signed-out page) is not one more ready user
            self.ready_once = True
            lab_window.user_ready()

    @task
    def transfer_a_cent_and_back(self) -> None:
        lab_window.hold()
        if not self.signed_in:
            self._sign_in()
            return
        for _ in range(2):  # there and back, so every balance ends where it began
            with self.client.get("/transfer/", name="/transfer/ (form)", catch_response=True) as form:
                if not answered(form):
                    return  # Locust has counted the failure with its own reason (a timeout, a 502 ...)
                if self._signed_out(form):
                    return
                token = bankpages.csrf_token(form.text or "")
                if not self.accounts:
                    self.accounts = bankpages.own_accounts(form.text or "")
                if not token or len(self.accounts) < 2:
                    form.failure("transfer form without a CSRF token or two own accounts")
                    return
            source, target = self.accounts[0], self.accounts[1]
            with self.client.post(
                "/transfer/",
                data={"from_account": source, "to_account": target, "amount": "0.01", "csrfmiddlewaretoken": token},
                headers=referer(self, "/transfer/"), name="/transfer/ (POST, csrf)", catch_response=True,
            ) as response:
                # Every page has "Balance sheet" in its menu, the login page included, so only the message proves it.
                # The POST is redirected to /transfer/<pk>/ (post/redirect/get), which the client follows.
                if not answered(response):
                    return  # Locust has counted the failure with its own reason
                if self._signed_out(response):
                    return
                if "Transferred" not in (response.text or ""):
                    response.failure("transfer not confirmed")
                    return
                confirmation = bankpages.transfer_confirmation(response.text or "")
            self.accounts.reverse()
            if confirmation is not None:
                self._check_next_read(confirmation)

    def _signed_out(self, response: Any) -> bool:
        """A page that answers with the sign-in form means the site no longer knows this user's session: say so
        (not "transfer not confirmed"), and sign in again on the next task instead of failing every one after it."""
        if not bankpages.is_sign_in_page(response.text or ""):
            return False
        response.failure("signed out: the site answered with the sign-in page")
        self.signed_in = False
        return True

    def _check_next_read(self, confirmation: dict[str, str]) -> None:
        with self.client.get("/balance/", name="/balance/ (after transfer)", catch_response=True) as sheet:
            stale = bankpages.is_stale(confirmation, bankpages.own_balances(sheet.text or ""))
        if stale is not None:
            lab_window.count("checked")
            if stale:
                lab_window.count("stale")
