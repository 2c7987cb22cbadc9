"""Money conserved: one customer (with two funded accounts) per Locust user, their API tokens for the API's scenario,
and the bank's total before and after."""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any, Callable

from lab.errors import BenchError
from lab.lifecycle import Project, running_lab
from lab.remote import RemoteHost
from provision.step1_bootstrap.recipes import APP_USER, CURRENT, SETTINGS, VENV

# The demo password is read from stdin into the environment, where load_sample_data looks for it: never an argument.
PASSWORD_FROM_STDIN = 'IFS= read -r BANK_DEMO_PASSWORD && export BANK_DEMO_PASSWORD && '
MAX_CUSTOMERS = 9999  # customer0001 … customer9999: four digits (the site's naming)


def manage_command(arguments: str) -> str:
    """A manage.py command line as the site runs it (its settings file, its venv), for the app user."""
    return f"cd {CURRENT} && BANK_CONFIG={SETTINGS} {VENV}/bin/python manage.py {arguments}"


def _site_host(project: Project, connect: Callable[[Any, str], Any]) -> Any:
    """The first web host: every web host shares one database, so any of them answers for the bank."""
    _, topology = running_lab(project)
    web = topology.tier("web")
    if not web:
        raise BenchError("the lab has no web host to run the site's management commands on")
    return connect(project.labdir, web[0].name)


def ensure_customers(project: Project, count: int, connect: Callable[[Any, str], Any] = RemoteHost) -> None:
    """customer0001 … customerNNNN exist, each owning two accounts (the site's `load_sample_data --customers N`)."""
    if not 1 <= count <= MAX_CUSTOMERS:
        raise BenchError(f"a bench signs in one customer per user: 1 to {MAX_CUSTOMERS} users (got {count})")
    password = project.labdir.secrets()["demo_password"]
    host = _site_host(project, connect)
    try:
        result = host.run(PASSWORD_FROM_STDIN + manage_command(f"load_sample_data --customers {int(count)}"),
                          user=APP_USER, stdin=password + "\n")
    finally:
        host.close()
    if not result.ok:
        raise BenchError(f"could not make {count} customers on {host.name}: {_last_line(result)}")


def api_tokens(project: Project, count: int, name: str, connect: Callable[[Any, str], Any] = RemoteHost) -> dict[str, str]:
    """A new API token named `name` for each of customer0001 … customerNNNN (replacing the one of that name), as the
    site's `manage.py api_token --customers N` prints them once: {username: token}."""
    host = _site_host(project, connect)
    try:
        result = host.run(manage_command(f"api_token --customers {int(count)} --name {name}"), user=APP_USER)
    finally:
        host.close()
    if not result.ok:
        raise BenchError(f"could not make {count} API tokens on {host.name}: {_last_line(result)}")
    tokens = dict(line.split(" ", 1) for line in result.stdout.strip().splitlines() if " " in line)
    if len(tokens) != count:
        raise BenchError(f"api_token on {host.name} printed {len(tokens)} tokens for {count} customers")
    return tokens


def bank_state(project: Project, connect: Callable[[Any, str], Any] = RemoteHost) -> dict[str, Any]:
    """The site's `manage.py bank_total`: {"total": Decimal, "accounts": N, "transfers": M}."""
    host = _site_host(project, connect)
    try:
        result = host.run(manage_command("bank_total"), user=APP_USER)
    finally:
        host.close()
    if not result.ok:
        raise BenchError(f"could not read the bank's total on {host.name}: {_last_line(result)}")
    try:
        reply = json.loads(result.stdout.strip().splitlines()[-1])
        return {"total": Decimal(reply["total"]), "accounts": int(reply["accounts"]),
                "transfers": int(reply["transfers"])}
    except (IndexError, ValueError, KeyError, TypeError, InvalidOperation):
        raise BenchError(f"bank_total on {host.name} did not print its JSON line: {result.stdout.strip()[:200]!r}") from None


def total_balance(project: Project, connect: Callable[[Any, str], Any] = RemoteHost) -> Decimal:
    """The sum of every account's balance: a bench moves money between accounts, so it must not change."""
    return bank_state(project, connect)["total"]


def conservation(before: Decimal, after: Decimal) -> str:
    """The report's line: "money conserved" or the difference (which fails the run)."""
    if before == after:
        return f"money conserved (total {before})"
    return f"money NOT conserved: total {before} before, {after} after ({after - before:+})"


def _last_line(result: Any) -> str:
    lines = (result.stderr or result.stdout or "").strip().splitlines()
    return lines[-1] if lines else f"exit {result.exit_code}"
