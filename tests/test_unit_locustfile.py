"""Unit tests for loadtests/locustfile.py's settings from the environment, read in a process of their own (importing
Locust monkey-patches threads, which this process's Fabric relies on)."""
from __future__ import annotations

import os
import subprocess
import sys

from lab.recipes import PROJECT_ROOT

PRINT_TIMEOUTS = ("import locustfile as f; print(f.SiteVisitor.connection_timeout, f.SiteVisitor.network_timeout, "
                  "f.BankCustomer.connection_timeout, f.BankCustomer.network_timeout)")


def locustfile_says(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LAB_")}
    return subprocess.run([sys.executable, "-c", PRINT_TIMEOUTS], cwd=PROJECT_ROOT / "loadtests", env={**clean, **env},
                          capture_output=True, text=True, timeout=120)


def test_client_timeouts_are_short_for_a_bench_and_the_stacks_own_when_asked():
    default = locustfile_says()
    assert default.stdout.split() == ["5.0", "15.0", "5.0", "15.0"], default.stderr
    rollout = locustfile_says(LAB_CLIENT_TIMEOUT_S="60")
    assert rollout.stdout.split() == ["60.0", "60.0", "60.0", "60.0"], rollout.stderr


def test_a_client_timeout_that_is_not_a_positive_number_stops_locust():
    for bad in ("0", "-3", "soon"):
        result = locustfile_says(LAB_CLIENT_TIMEOUT_S=bad)
        assert result.returncode != 0 and "LAB_CLIENT_TIMEOUT_S must be a number of seconds > 0" in result.stderr
