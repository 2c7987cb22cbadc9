"""Unit tests for the monitor tier (provision/step6_monitor): its links open each exporter to monitor1 alone and
Prometheus to the machine alone, the scrape targets follow the topology, and its recipes, on recording hosts,
write what Prometheus and the exporters read (and nothing on a lab without a monitor host)."""
from __future__ import annotations

import re

import pytest

from lab.hosts import HostFacts
from lab.recipes import Target
from lab.recipes.scheduler import template_environment
from lab.stack import EVERY_TIER
from lab.topology import Overrides, Topology, resolve
from provision.step1_bootstrap.recipes import APP_PORT as SITE_APP_PORT
from provision.step6_monitor import APP_PORT, EXPORTERS, recipes
from tests.test_unit_links import RecordingHost

MACHINE_IP = "192.168.56.1"
FACTS = HostFacts(proxy_url=None, control_address=MACHINE_IP)


def lab(**counts: int) -> Topology:
    return resolve({}, {}, Overrides(counts=counts), platform="linux")


@pytest.fixture(scope="module")
def monitored() -> Topology:
    """lb1, web1, web2, db1 (primary), db2 (standby), monitor1 (.91)."""
    return resolve({}, {}, Overrides(web=2, counts={"db": 2, "monitor": 1}), platform="linux")


def run(recipe, topology: Topology, host: str) -> tuple[dict[str, str], list[str], Target]:
    """One recipe on a recording host: the files it wrote, the commands it ran, and its Target (its changes)."""
    files: dict[str, str] = {}
    remote = RecordingHost(files)
    target = Target(remote, topology.host(host), topology, FACTS, {}, template_environment(),
                    connect=lambda name: RecordingHost({}))
    recipe(target)
    return files, remote.commands, target


def test_the_probe_link_uses_the_sites_app_port():
    assert APP_PORT == SITE_APP_PORT


def test_each_exporter_is_open_to_monitor1_only_and_prometheus_to_the_machine_only(monitored):
    monitor_ip = monitored.host("monitor1").ip
    for host in monitored.hosts:
        openings: dict[int, set[str]] = {}
        for opening in monitored.inbound(host, MACHINE_IP):
            openings.setdefault(opening.port, set()).update(opening.sources)
        for exporter in EXPORTERS:
            watched = exporter.tier in (EVERY_TIER, host.tier) and host.tier != "monitor"
            assert (exporter.port in openings) == watched, (host.name, exporter.job)
            if watched:
                assert openings[exporter.port] == {monitor_ip}
        if host.tier == "web":
            assert openings[APP_PORT] == {monitored.host("lb1").ip, monitor_ip}  # the balancer's, and the probe's
    monitor_openings = {o.port: o.sources for o in monitored.inbound(monitored.host("monitor1"), MACHINE_IP)}
    assert monitor_openings == {22: (MACHINE_IP,), 9090: (MACHINE_IP,), 9093: (MACHINE_IP,)}


def test_a_lab_without_a_monitor_host_opens_no_exporter_port():
    minimal = lab()
    ports = {o.port for host in minimal.hosts for o in minimal.inbound(host, MACHINE_IP)}
    assert not ports & {e.port for e in EXPORTERS}


def test_exporters_listen_on_the_private_address_and_on_loopback_on_monitor1(monitored):
    node = next(e for e in EXPORTERS if e.job == "node")
    assert recipes.exporter_address(monitored, monitored.host("web1"), node) == monitored.host("web1").ip
    # no link leads monitor1 to itself: its own exporter faces loopback only (step 1's socket check)
    assert recipes.exporter_address(monitored, monitored.host("monitor1"), node) == "127.0.0.1"


def test_scrape_targets_follow_the_topology(monitored):
    jobs = {job["name"]: [(t["host"], t["address"]) for t in job["targets"]]
            for job in recipes.scrape_jobs(monitored, monitored.host("monitor1"))}
    assert [host for host, _ in jobs["node"]] == [h.name for h in monitored.hosts]
    assert ("monitor1", "127.0.0.1:9100") in jobs["node"] and ("web2", "192.168.56.22:9100") in jobs["node"]
    assert jobs["nginx"] == [("lb1", "192.168.56.11:9113")]
    assert jobs["postgres"] == [("db1", "192.168.56.31:9187"), ("db2", "192.168.56.32:9187")]
    assert recipes.app_probes(monitored, monitored.host("monitor1")) == [
        {"url": "http://192.168.56.21:8000/health/", "host": "web1", "tier": "web"},
        {"url": "http://192.168.56.22:8000/health/", "host": "web2", "tier": "web"}]


def test_api_hosts_are_probed_like_web_hosts_and_take_the_probe_from_monitor1_only():
    with_api = resolve({}, {}, Overrides(counts={"api": 1, "monitor": 1}), platform="linux")
    monitor = with_api.host("monitor1")
    assert recipes.app_probes(with_api, monitor) == [
        {"url": "http://192.168.56.21:8000/health/", "host": "web1", "tier": "web"},
        {"url": f"http://{with_api.host('api1').ip}:8000/health/", "host": "api1", "tier": "api"}]
    assert with_api.clients(with_api.host("api1"), "app-probe") == (monitor,)  # the firewall lets it in, no one else


def test_prometheus_gets_its_targets_rules_and_alertmanager_on_the_private_address(monitored):
    files, commands, _ = run(recipes.prometheus, monitored, "monitor1")
    config = files[recipes.PROMETHEUS_CONFIG]
    assert re.findall(r'targets: \["([^"]+)"\]', config) == [
        "192.168.56.91:9093",  # alerting: Alertmanager
        "192.168.56.91:9090", "192.168.56.91:9093",
        *(f"{h.ip if h.name != 'monitor1' else '127.0.0.1'}:9100" for h in monitored.hosts),
        "192.168.56.11:9113", "192.168.56.31:9187", "192.168.56.32:9187",
        *(f"{h.ip if h.name != 'monitor1' else '127.0.0.1'}:9256" for h in monitored.hosts),
        "http://192.168.56.21:8000/health/", "http://192.168.56.22:8000/health/"]
    assert 'replacement: "127.0.0.1:9115"' in config and f"  - {recipes.ALERT_RULES}\n" in config
    assert "--web.listen-address=192.168.56.91:9090" in files["/etc/default/prometheus"]
    assert "--storage.tsdb.retention.time=6h" in files["/etc/default/prometheus"]
    assert f"promtool check config {recipes.PROMETHEUS_CONFIG}" in commands
    rules = files[recipes.ALERT_RULES]
    for alert in ("HostDown", "WebHostDown", "ReplicationLag", "DiskAlmostFull"):
        assert f"- alert: {alert}\n" in rules


def test_alertmanager_has_no_cluster_port_and_sends_nowhere(monitored):
    files, commands, _ = run(recipes.alertmanager, monitored, "monitor1")
    args = files["/etc/default/prometheus-alertmanager"]
    assert "--web.listen-address=192.168.56.91:9093" in args and args.rstrip().endswith('--cluster.listen-address="')
    config = files[recipes.ALERTMANAGER_CONFIG]
    assert re.findall(r"^  - name: (\S+)$", config, re.M) == ["lab-nowhere"]
    assert not re.search(r"_configs:|url:|smtp", config)  # no integration: nothing leaves Alertmanager


def test_the_postgres_exporter_connects_by_peer_over_the_unix_socket(monitored):
    files, _, _ = run(recipes.postgres_exporter, monitored, "db2")
    default = files["/etc/default/prometheus-postgres-exporter"]
    assert "DATA_SOURCE_NAME='user=prometheus host=/run/postgresql dbname=postgres sslmode=disable'" in default
    assert 'ARGS="--web.listen-address=192.168.56.32:9187"' in default
    assert "password" not in default.lower()


def test_the_monitor_role_is_made_on_the_primary_only(monitored):
    _, commands, target = run(recipes.postgres_monitor_role, monitored, "db1")
    assert target.changes == ["created role prometheus"]
    _, commands, target = run(recipes.postgres_monitor_role, monitored, "db2")
    assert not commands and not target.changes


def test_without_a_monitor_host_no_exporter_is_installed_or_configured():
    minimal = lab()
    for recipe, host in ((recipes.node_exporter, "web1"), (recipes.nginx_exporter, "lb1"),
                         (recipes.postgres_exporter, "db1"), (recipes.process_exporter, "web1"),
                         (recipes.nginx_stub_status, "lb1"),
                         (recipes.postgres_monitor_role, "db1")):
        files, commands, target = run(recipe, minimal, host)
        # the recording host says every unit is active: one an earlier lab started is stopped, nothing else
        assert not files and all(c.startswith("stopped prometheus-") for c in target.changes), recipe.__name__
        assert not any("apt-get" in c or "dpkg-query" in c for c in commands), recipe.__name__
