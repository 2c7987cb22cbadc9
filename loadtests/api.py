"""Locust scenario for the site's JSON API (`lab bench --scenario api`): each user a customer with a token of its own,
reading its accounts and transfers and moving a cent between its two accounts and back, each user paced below the
balancer's per-token allowance (a client that keeps to its quota: a 429 is a failure here)."""
from __future__ import annotations

import json
import os

from locust import FastHttpUser, constant_throughput, task
from locust.exception import StopUser

import lab_window
import labtls
from locustfile import answered, client_timeouts, customer_name

# Requests a second per user: half the balancer's allowance per token (provision/step5_balancer's
# API_RATE_PER_SECOND, 20), so a user's own pace never meets the limit; more load is more users.
USER_RATE = float(os.environ.get("LAB_API_RATE", "10"))
if not USER_RATE > 0:  # raised at import so Locust refuses to start instead of silently using a default
    raise ValueError(f"LAB_API_RATE must be a number of requests a second > 0, got {USER_RATE!r}")


def api_tokens() -> dict[str, str]:
    """customer%04d → its token, as `lab bench` made them (`manage.py api_token --customers N`): LAB_API_TOKENS, JSON."""
    return json.loads(os.environ.get("LAB_API_TOKENS") or "{}")


class ApiCustomer(FastHttpUser):
    """A customer's program on the API: one request per task, the customer's own token on each."""

    wait_time = constant_throughput(USER_RATE)
    connection_timeout, network_timeout = client_timeouts()
    insecure = labtls.INSECURE
    ssl_context_factory = labtls.context_factory
    headers: dict[str, str]
    accounts: list[str]

    def on_start(self) -> None:
        username = customer_name(self.environment.runner)
        token = api_tokens().get(username)
        if not token:
            raise StopUser(f"no API token for {username} in LAB_API_TOKENS")
        self.headers = {"Authorization": f"Bearer {token}"}
        # "start: " marks start-up requests: lab bench's steady state begins once every user is ready
        with self.client.get("/api/accounts/", name="start: /api/accounts/", headers=self.headers,
                             catch_response=True) as response:
            numbers = [a["number"] for a in (response.json() or {}).get("accounts", [])] if answered(response) else []
            if len(numbers) < 2:
                if answered(response):  # else Locust has counted it with its own reason (refused, reset, a 502 ...)
                    response.failure(f"{username} has {len(numbers)} accounts, the scenario needs two")
                raise StopUser()
        self.accounts = numbers[:2]
        lab_window.user_ready()

    @task(3)
    def accounts_list(self) -> None:
        lab_window.hold()
        self.client.get("/api/accounts/", name="/api/accounts/ (db)", headers=self.headers)

    @task(1)
    def transfers_list(self) -> None:
        lab_window.hold()
        self.client.get("/api/transfers/", name="/api/transfers/ (db)", headers=self.headers)

    @task(2)
    def transfer_a_cent(self) -> None:
        """A cent from one account to the other, then (next time) back: every balance ends where it began, give or
        take the cent in flight."""
        lab_window.hold()
        source, target = self.accounts
        with self.client.post("/api/transfers/", name="/api/transfers/ (POST)", headers=self.headers,
                              json={"from_account": source, "to_account": target, "amount": "0.01"},
                              catch_response=True) as response:
            if response.status_code == 0:
                return  # no answer (refused, reset, timed out): Locust has counted it with its own reason
            if response.status_code != 201:
                response.failure(f"transfer not made: {response.status_code} {(response.text or '')[:120]}")
                return
        self.accounts.reverse()
