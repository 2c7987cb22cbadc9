"""The monitor tier on a real lab (lb1, web1, db1, monitor1): `lab up` and `lab test` green (every scrape target up,
the rules loaded), `lab status` names Prometheus, and the WebHostDown alert reaches Alertmanager within a bounded
time once web1's app server stops, then leaves once it is started again."""

from __future__ import annotations

import json
import os
import time
import urllib.request

import pytest

from lab.lifecycle import Project, running_lab
from lab.services import services_of
from lab.testing import needs_root, scratch_lab
from provision.step6_monitor import ALERTMANAGER_PORT, PROMETHEUS_PORT
from provision.step6_monitor.recipes import DOWN_FOR_S, EVALUATION_INTERVAL_S, SCRAPE_INTERVAL_S

NAME = os.environ.get("TEST_LAB_NAME", "labmon")
pytestmark = pytest.mark.integration

needs_root()

# The alert's own path: a failed probe (one scrape interval), pending, then firing after DOWN_FOR_S (evaluations
# every EVALUATION_INTERVAL_S), sent to Alertmanager at once; the rest is slack for a busy machine.
ALERT_WITHIN_S = SCRAPE_INTERVAL_S + DOWN_FOR_S + 2 * EVALUATION_INTERVAL_S + 15
RESOLVED_WITHIN_S = 60


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    with scratch_lab(NAME, range(249, 253), folder=tmp_path_factory.mktemp("monitor")) as lab:
        with open(lab.folder / "lab.toml", "a") as config:
            config.write("\n[tiers.monitor]\ncount = 1\n")
        lab.ok("up")
        yield lab


def alerts(monitor_ip: str) -> list[dict]:
    """The alerts Alertmanager holds now, active ones only, asked from this machine (the link's source)."""
    url = f"http://{monitor_ip}:{ALERTMANAGER_PORT}/api/v2/alerts?active=true&silenced=false&inhibited=false"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as answer:
        return json.load(answer)


def web_host_down(monitor_ip: str, host: str) -> bool:
    return any(a["labels"].get("alertname") == "WebHostDown" and a["labels"].get("instance") == host
               for a in alerts(monitor_ip))


def test_the_lab_passes_every_check_and_status_names_prometheus(lab):
    lab.ok("test")  # step 1's socket and firewall checks over every exporter, and test_monitor.py
    _, topology = running_lab(Project.here(lab.folder, environ={}))
    monitor = topology.host("monitor1")
    status = lab.ok("status")
    assert f"http://{monitor.ip}:{PROMETHEUS_PORT}/" in status
    for unit in services_of(topology, "monitor"):
        assert unit in status
    again = lab.ok("up")
    assert "no changes: the lab was already converged" in again, again


def test_the_web_host_down_alert_fires_when_the_app_server_stops(lab):
    _, topology = running_lab(Project.here(lab.folder, environ={}))
    monitor_ip = topology.host("monitor1").ip
    unit = services_of(topology, "web")[0]
    assert not web_host_down(monitor_ip, "web1"), "WebHostDown is active before anything stopped"
    lab.ok("ssh", "web1", "sudo", "systemctl", "stop", unit)
    stopped = time.monotonic()
    try:
        while not web_host_down(monitor_ip, "web1"):
            assert time.monotonic() - stopped < ALERT_WITHIN_S, f"no WebHostDown for web1 in Alertmanager after {ALERT_WITHIN_S} s"
            time.sleep(0.5)
        fired_after = time.monotonic() - stopped
        print(f"WebHostDown for web1 in Alertmanager {fired_after:.1f} s after `systemctl stop {unit}`")
        assert not any(a["labels"].get("alertname") == "HostDown" for a in alerts(monitor_ip)), \
            "HostDown fired too: the app server stopped, not the host"
    finally:
        lab.ok("ssh", "web1", "sudo", "systemctl", "start", unit)
    started = time.monotonic()
    while web_host_down(monitor_ip, "web1"):
        assert time.monotonic() - started < RESOLVED_WITHIN_S, f"WebHostDown still active {RESOLVED_WITHIN_S} s after restart"
        time.sleep(1)
