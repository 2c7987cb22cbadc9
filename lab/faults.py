"""Faults under bounded load, measured: a fixed number of HTTP clients on a scratch lab while a service restarts.

Shared by benchmarks/db_restart.py (the figures, as JSON) and tests/test_integration_faults.py (their bound), so
the test checks what the benchmark measures; `lab demo crash` (lab/demos.py) uses its load and summary.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from lab.services import services_of
from lab.topology import Topology



class Lab(Protocol):
    """What these measurements need of a lab: lab.testing.ScratchLab (not imported: lab.testing imports lab.cli)."""

    @property
    def state(self) -> dict[str, Any]: ...

    def ok(self, *args: str, timeout: float | None = None) -> str: ...

    def run(self, *args: str, timeout: float | None = None) -> Any: ...


REQUEST_TIMEOUT_S = 10.0
LOAD_PATH = "/health/"  # one database query per request, through the balancer: it fails exactly when the site's does


@dataclass(frozen=True)
class Sample:
    """One request: when it started and ended (seconds since the load began) and whether it succeeded."""

    started: float
    ended: float
    ok: bool
    status: str  # the HTTP status, or the error's name when there was no answer


def run_load(url: str, clients: int, seconds: float, during: Callable[[float], None] | None = None,
             cafile: str | None = None) -> list[Sample]:
    """`clients` threads request `url` back to back for `seconds`; `during(load_started)` runs meanwhile.
    An https `url` is verified against `cafile` (the lab's own CA, as `lab ca` names it)."""
    samples: list[Sample] = []
    lock = threading.Lock()
    tls = urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=cafile))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), tls)  # the lab's hosts, never a proxy
    started = time.monotonic()
    deadline = started + seconds

    def client() -> None:
        while time.monotonic() < deadline:
            begun = time.monotonic() - started
            try:
                with opener.open(url, timeout=REQUEST_TIMEOUT_S) as response:
                    response.read()
                    status, ok = str(response.status), response.status == 200
            except urllib.error.HTTPError as error:
                status, ok = str(error.code), False
            except (OSError, urllib.error.URLError) as error:
                status, ok = type(error).__name__, False
            with lock:
                samples.append(Sample(round(begun, 3), round(time.monotonic() - started, 3), ok, status))
            if not ok:
                time.sleep(0.05)  # a refused connection answers at once: do not spin

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    if during is not None:
        during(started)
    for thread in threads:
        thread.join(seconds + REQUEST_TIMEOUT_S + 5)
    return sorted(samples, key=lambda s: s.started)


def summarize(samples: list[Sample], event_started: float, event_ended: float) -> dict:
    """Requests, failures, and the failures' window: from the first failed request's start to the last one's end."""
    failed = [s for s in samples if not s.ok]
    statuses: dict[str, int] = {}
    for sample in failed:
        statuses[sample.status] = statuses.get(sample.status, 0) + 1
    window = round(max(s.ended for s in failed) - min(s.started for s in failed), 2) if failed else 0.0
    return {
        "requests": len(samples),
        "failed": len(failed),
        "failed_percent": round(100 * len(failed) / len(samples), 2) if samples else 0.0,
        "failure_window_s": window,
        "first_failure_after_restart_began_s": round(min(s.started for s in failed) - event_started, 2) if failed else None,
        "last_failure_after_restart_ended_s": round(max(s.ended for s in failed) - event_ended, 2) if failed else None,
        "restart_command_s": round(event_ended - event_started, 2),
        "failed_by_status": statuses,
    }


def database_restart_under_load(lab: Lab, clients: int = 8, seconds: float = 20.0,
                                restart_after: float = 5.0) -> dict:
    """`systemctl restart` of the database's main service on db1, `restart_after` s into the load; its cost."""
    topology = Topology.from_dict(lab.state["topology"])
    database = next(h for h in topology.hosts if h.tier == "db")  # the primary, db1 (a pooler may serve "sql")
    unit = services_of(topology, database.tier)[0]
    url = f"https://{topology.site_address}{LOAD_PATH}"  # port 80 only redirects to the site's https
    marks: dict[str, float] = {}

    def restart(load_started: float) -> None:
        time.sleep(restart_after)
        marks["began"] = time.monotonic() - load_started
        lab.ok("ssh", database.name, "systemctl", "restart", unit)
        marks["ended"] = time.monotonic() - load_started

    samples = run_load(url, clients, seconds, during=restart, cafile=lab.ok("ca").strip())
    return {"url": url, "clients": clients, "load_s": seconds, "restart": f"systemctl restart {unit} on {database.name}",
            "restart_began_at_s": round(marks["began"], 2),
            **summarize(samples, marks["began"], marks["ended"])}


REBOOT_MARKER = "/run/lab-before-reboot"  # /run is a fresh tmpfs on every boot: gone once the host has rebooted


def reboot_host(lab: Lab, host: str, timeout: float = 300) -> dict:
    """`systemctl reboot` inside a host, as a user would; seconds until it has booted again (sshd answers and
    systemd says the boot finished) and until `lab status` shows its main services up. No `lab up` involved."""
    lab.ok("ssh", host, "touch", REBOOT_MARKER)
    started = time.monotonic()
    lab.run("ssh", host, "systemctl reboot")  # the connection may close under it: its exit code says nothing
    booted = None
    while time.monotonic() - started < timeout:
        answer = lab.run("ssh", host, f"test -e {REBOOT_MARKER} || systemctl is-system-running --wait", timeout=120)
        if answer.stdout.strip() in ("running", "degraded"):
            booted = time.monotonic() - started
            break
        time.sleep(0.5)
    if booted is None:
        raise AssertionError(f"{host} did not come back within {timeout:.0f} s of `systemctl reboot`")
    services_up = None
    while time.monotonic() - started < timeout:
        rows = {row["name"]: row for row in json.loads(lab.ok("status", "--format", "json"))}
        if rows[host]["state"] == "running" and all(s == "up" for s in rows[host]["services"].values()):
            services_up = time.monotonic() - started
            break
        time.sleep(0.5)
    return {"host": host, "booted_s": round(booted, 1),
            "services_up_s": round(services_up, 1) if services_up is not None else None}
