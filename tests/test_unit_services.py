"""Unit tests for lab.services: the tier → services map, and the probe `lab status` runs (a fake `ssh` plays the hosts)."""
from __future__ import annotations

import os
import time

import pytest

from lab import services
from lab.services import probe, read_states, services_of
from lab.state import LabDir
from lab.topology import Overrides, resolve
from provision.step2_database.recipes import PG_VERSION
from provision.step5_pooler.recipes import POOLED_TIERS

GUNICORN = resolve({}, {}, Overrides(web=2), platform="linux")
MOD_WSGI = resolve({}, {}, Overrides(web=2, app_server="mod_wsgi"), platform="linux")

# Plays each host: the last argument before `systemctl` is the host; web2 has its app server stopped, db1 hangs.
FAKE_SSH = """#!/bin/sh
echo "$@" >> "$(dirname "$0")/calls"
while [ "$1" != systemctl ]; do host=$1; shift; done
shift 2
case $host in
  db1) sleep 5 ;;
  web2) for unit in "$@"; do echo inactive; done; exit 3 ;;
  *) for unit in "$@"; do echo active; done ;;
esac
"""


def test_every_tier_has_its_main_services():
    # A load generator host runs Locust workers only while a bench runs (lab.bench.distributed): no resident service.
    assert all(spec.services for name, spec in GUNICORN.stack.tiers.items() if name != "loadgen")
    assert services_of(GUNICORN, "loadgen") == ()
    assert services_of(GUNICORN, "lb") == ("nginx",)
    assert services_of(GUNICORN, "web") == ("gunicorn",)
    assert services_of(MOD_WSGI, "web") == ("apache2",)
    # the cluster, not the wrapper that stays active; the version step 2 installs
    assert services_of(GUNICORN, "db") == (f"postgresql@{PG_VERSION}-main",)
    assert services_of(GUNICORN, "cache") == ("memcached",)  # step 6's tier, registered by its step package
    assert services_of(GUNICORN, "search") == ("xapian-tcpsrv",)  # step 6's search tier


@pytest.mark.parametrize(("output", "states"), [
    ("active\n", {"nginx": "up"}),
    ("inactive\n", {"nginx": "down"}),
    ("failed\n", {"nginx": "down"}),
    ("activating\n", {"nginx": "down"}),
    ("", {"nginx": "unknown"}),
    ("active\nactive\n", {"nginx": "unknown"}),
])
def test_read_states(output, states):
    assert read_states(("nginx",), output) == states


@pytest.fixture
def fake_hosts(tmp_path, monkeypatch) -> LabDir:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(FAKE_SSH)
    (bin_dir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(services, "PROBE_TIMEOUT_S", 1.5)
    labdir = LabDir(tmp_path / ".lab")
    labdir.ensure()
    labdir.ssh_config.write_text("")
    return labdir


def test_probe_asks_every_host_at_once_over_the_labs_ssh_config(fake_hosts):
    started = time.monotonic()
    found = probe(fake_hosts, GUNICORN, ["lb1", "web1", "web2", "db1"])
    took = time.monotonic() - started
    assert found == {"lb1": {"nginx": "up"}, "web1": {"gunicorn": "up"}, "web2": {"gunicorn": "down"},
                     "db1": {"postgresql@15-main": "unknown"}}  # db1 did not answer within the timeout
    assert took < 3  # in parallel: one timeout, not one per host
    calls = (fake_hosts.path.parent / "bin" / "calls").read_text().splitlines()
    assert len(calls) == 4
    assert all(call.startswith(f"-F {fake_hosts.ssh_config} -o BatchMode=yes") for call in calls)


def test_probe_asks_for_the_labs_own_app_server(fake_hosts):
    assert probe(fake_hosts, MOD_WSGI, ["web1"]) == {"web1": {"apache2": "up"}}
    assert probe(fake_hosts, MOD_WSGI, []) == {}


def test_a_pooled_lab_shows_pgbouncer_among_the_web_hosts_services():
    pooled = resolve({}, {}, Overrides(web=2, pooler="pgbouncer"), platform="linux")
    assert services_of(pooled, "web") == ("gunicorn", "pgbouncer")
    assert services_of(pooled, "lb") == ("nginx",)
    assert services_of(GUNICORN, "web") == ("gunicorn",)  # no pooler, no pgbouncer to show


def test_the_summary_names_every_pooled_tier_the_lab_has():
    """describe_data_tiers spells step 5's POOLED_TIERS itself (the library imports no recipe): held equal here."""
    assert POOLED_TIERS == ("web", "api")
    with_api = resolve({}, {}, Overrides(web=1, pooler="pgbouncer", counts={"api": 1}), platform="linux")
    assert "pgbouncer on each web and api host (127.0.0.1:6432)" in with_api.describe_data_tiers()
    without = resolve({}, {}, Overrides(web=1, pooler="pgbouncer"), platform="linux")
    assert "pgbouncer on each web host (127.0.0.1:6432)" in without.describe_data_tiers()
    assert services_of(with_api, "api")[-1] == "pgbouncer"


def test_a_stopped_standby_is_not_called_one():
    pair = resolve({}, {}, Overrides(web=1, counts={"db": 2}), platform="linux")
    assert "primary db1, hot standby db2 (async" in pair.describe_data_tiers()
    assert "primary db1, db2 down (`lab up` makes it a standby);" in pair.describe_data_tiers(["db2", "web1"])
