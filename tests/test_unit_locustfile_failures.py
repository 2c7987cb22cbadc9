"""Unit test for the mix scenario's failure reasons: a connection that gets no answer keeps Locust's own reason."""
from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

LOADTESTS = Path(__file__).resolve().parents[1] / "loadtests"


def closed_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed when the with ends: a connection to it is refused


def test_a_refused_connection_is_counted_as_refused_not_as_a_page_without_a_csrf_token(tmp_path):
    """FastHttpUser's answer to a refused connection has status 0, which its `ok` calls fine: the mix read the empty
    page and reported "no CSRF token", and a bench verdict named that instead of the balancer that was down.
    Locust in its own process (it monkey-patches threads), against a closed port on loopback, for 3 s."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAB_")} | {"LAB_DEMO_PASSWORD": "unused"}
    locust = Path(sys.executable).with_name("locust")
    subprocess.run([str(locust), "-f", "locustfile.py", "BankCustomer", "--headless", "-u", "2", "-r", "2", "-t", "3s",
                    "--host", f"http://127.0.0.1:{closed_loopback_port()}", "--csv", str(tmp_path / "run"),
                    "--only-summary"], cwd=LOADTESTS, env=env, capture_output=True, text=True, timeout=120)
    with open(tmp_path / "run_failures.csv", newline="") as failures:
        errors = {row["Error"]: int(row["Occurrences"]) for row in csv.DictReader(failures)}
    assert errors and all("ConnectionRefusedError" in error for error in errors), errors
