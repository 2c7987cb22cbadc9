"""The tuned lab (issue 9): `lab up --preset tuned` (pgbouncer on both web hosts, cache1..2, db2 a hot standby) and
`lab test` green; `lab failover db` under a bounded load loses no confirmed transfer; the next `lab up` makes the
old primary the standby and `lab test` is green again with the roles swapped. One lab for the whole module."""

from __future__ import annotations

import os
import re
import signal
import sys
import subprocess

import pytest

from lab.testing import ScratchLab, needs_root, scratch_lab

NAME = os.environ.get("TEST_LAB_NAME", "labtuned")  # its own name and subnet: other labs must not matter
pytestmark = pytest.mark.integration

needs_root()

LOAD_USERS = 5  # the bounded read load beside the failover's own write prober (Locust's anonymous visitors)
LOAD_LIMIT_S = 120
SUMMARY = re.compile(r"failover (\w+) → (\w+) in [\d.]+ s: writes refused or held for ([\d.]+) s, (\d+) of (\d+) "
                     r"requests failed, (\d+) transfers confirmed before it, (\d+) lost")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    with scratch_lab(NAME, range(240, 250), folder=tmp_path_factory.mktemp("tuned")) as the_lab:
        the_lab.ok("up", "--preset", "tuned")
        yield the_lab
    print(f"\ntuned lab seconds per verb: {the_lab.seconds}")


def lb_address(lab: ScratchLab) -> str:
    return next(h["ip"] for h in lab.state["topology"]["hosts"] if h["tier"] == "lb")


def test_the_tuned_lab_is_green(lab):
    hosts = {h["name"] for h in lab.state["topology"]["hosts"]}
    assert hosts == {"lb1", "web1", "web2", "cache1", "cache2", "db1", "db2"}
    assert "database: primary db1, hot standby db2" in lab.ok("status")
    out = lab.ok("test")
    assert "all checks passed" in out


def test_failover_under_load_loses_no_confirmed_transfer_then_up_swaps_the_roles(lab):
    load = subprocess.Popen(
        [sys.executable, "-m", "locust", "-f", "loadtests/locustfile.py", "SiteVisitor", "--headless", "-u", str(LOAD_USERS), "-r", str(LOAD_USERS),
         "-t", f"{LOAD_LIMIT_S}s", "--host", f"https://{lb_address(lab)}", "--only-summary"],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), stdout=subprocess.DEVNULL,
        env={**os.environ, "LAB_CA_FILE": lab.ok("ca").strip()},  # Locust verifies lb1 against the lab's own CA
        stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        out = lab.ok("failover", "db")
    finally:
        os.killpg(load.pid, signal.SIGTERM)
        load.wait(30)
    found = SUMMARY.search(out)
    assert found, out
    old, new, refused_s, failed, attempts, before, lost = found.groups()
    print(f"\nfailover: {found.group(0)}")
    assert (old, new) == ("db1", "db2")
    assert int(before) > 0 and int(attempts) > int(before)  # the prober wrote before and after
    assert int(lost) == 0
    assert lab.state["topology"]["db"]["primary"] == "db2"
    # the old primary is fenced: stopped, and a start would bring it up read-only (standby.signal)
    assert lab.ok("ssh", "db1", "test -f /var/lib/postgresql/15/main/standby.signal && echo fenced").strip() == "fenced"
    # Until the next `lab up`, the fenced db1 is no standby: status says so, and a second failover refuses in one line.
    assert "primary db2, db1 down (`lab up` makes it a standby);" in lab.ok("status")
    again = lab.run("failover", "db")
    assert again.returncode == 66 and again.stderr.count("\n") == 1, again.stderr
    assert "db1 is not a standby in recovery" in again.stderr and "could not" not in again.stderr
    lab.ok("up")
    assert "database: primary db2, hot standby db1 (async" in lab.ok("status")
    assert "all checks passed" in lab.ok("test")
