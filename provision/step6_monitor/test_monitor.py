"""Step 6 checks on the monitor host: Prometheus and Alertmanager on its private address only, every target the links
lead it to up (asked of Prometheus' HTTP API from this machine), the alert rules loaded and fed with data."""

import json
import time
import urllib.parse
import urllib.request

from provision.step6_monitor import ALERTMANAGER_PORT, PROMETHEUS_PORT
from provision.step6_monitor.recipes import BLACKBOX_PORT, app_probes, scrape_jobs

TIERS = ("monitor",)
# `lab check`: one line per check, what to try when it fails (lab/workshop.py prints it).
HINTS = {
    "test_prometheus_and_alertmanager_listen_on_the_private_address_only": "/etc/default/prometheus*: `--web.listen-address=<monitor1's IP>:PORT`, `--cluster.listen-address=`; `ss -ltnp`",
    "test_every_scrape_target_is_up": "http://<monitor1's IP>:9090/targets says why: an exporter stopped on that host, or its firewall lacks monitor1's rule",
    "test_the_alert_rules_are_loaded": "`promtool check config /etc/prometheus/prometheus.yml` on monitor1, then `systemctl reload prometheus`",
    "test_every_alert_has_the_series_it_watches": "node exporter's filesystem flags must keep \"/\"; the blackbox exporter must probe each web host; nginx_up/redis_up 0: nginx or Redis is down on that host",
}
ALERTS = {"HostDown", "WebHostDown", "ExporterDown", "BalancerDown", "RedisDown", "PostgresDown", "ReplicationLag",
          "StandbyNotStreaming", "DiskAlmostFull"}
TARGETS_UP_WITHIN_S = 30  # right after `lab up`, a target not scraped yet is "unknown": a few scrape intervals


def api(node, port, path, **params):
    """A JSON answer of Prometheus (or Alertmanager) on the monitor host, asked from this machine (the link's source)."""
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"http://{node.ip}:{port}{path}{query}", timeout=5) as answer:
        return json.load(answer)


def expected_targets(lab, node):
    """(job, instance) of everything Prometheus must scrape: itself, Alertmanager, the exporters, the app probes."""
    wanted = {("prometheus", node.name), ("alertmanager", node.name)}
    wanted |= {(job["name"], target["host"]) for job in scrape_jobs(lab, node) for target in job["targets"]}
    return wanted | {("app", probe["host"]) for probe in app_probes(lab, node)}


def test_prometheus_and_alertmanager_listen_on_the_private_address_only(host, node):
    for unit in ("prometheus", "prometheus-alertmanager", "prometheus-blackbox-exporter"):
        assert host.service(unit).is_running, f"{unit} is not running"
    for port in (PROMETHEUS_PORT, ALERTMANAGER_PORT):
        assert host.socket(f"tcp://{node.ip}:{port}").is_listening, f"nothing listens on {node.ip}:{port}"
        assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening, f"something listens on every address, :{port}"
    assert host.socket(f"tcp://127.0.0.1:{BLACKBOX_PORT}").is_listening, "the blackbox exporter is not on loopback"
    assert not host.socket(f"tcp://0.0.0.0:{BLACKBOX_PORT}").is_listening
    assert api(node, ALERTMANAGER_PORT, "/api/v2/status")["cluster"]["status"] == "disabled", \
        "Alertmanager gossips with peers (its cluster port is on): --cluster.listen-address= turns it off"


def test_every_scrape_target_is_up(node, lab):
    wanted = expected_targets(lab, node)
    deadline = time.monotonic() + TARGETS_UP_WITHIN_S
    while True:
        targets = api(node, PROMETHEUS_PORT, "/api/v1/targets", state="active")["data"]["activeTargets"]
        found = {(t["labels"]["job"], t["labels"]["instance"]): t for t in targets}
        down = {key: f"{t['health']} ({t['lastError'] or 'not scraped yet'})" for key, t in found.items()
                if t["health"] != "up"}
        if (set(found) == wanted and not down) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert set(found) == wanted, f"missing {sorted(wanted - set(found))}, not of this lab {sorted(set(found) - wanted)}"
    assert not down, "; ".join(f"{job} {instance}: {why}" for (job, instance), why in sorted(down.items()))


def test_the_alert_rules_are_loaded(node):
    groups = api(node, PROMETHEUS_PORT, "/api/v1/rules", type="alert")["data"]["groups"]
    rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert set(rules) == ALERTS, f"missing {sorted(ALERTS - set(rules))}, unexpected {sorted(set(rules) - ALERTS)}"
    broken = {name: rule.get("lastError") for name, rule in rules.items() if rule["health"] == "err"}
    assert not broken, f"rules failing to evaluate: {broken}"
    alertmanagers = api(node, PROMETHEUS_PORT, "/api/v1/alertmanagers")["data"]["activeAlertmanagers"]
    assert [a["url"] for a in alertmanagers] == [f"http://{node.ip}:{ALERTMANAGER_PORT}/api/v2/alerts"]


def test_every_alert_has_the_series_it_watches(node, lab):
    """An alert over a series nobody reports can never fire: "/" of every host, each web host's probe answering."""
    def instances(query):
        result = api(node, PROMETHEUS_PORT, "/api/v1/query", query=query)["data"]["result"]
        return {series["metric"]["instance"]: float(series["value"][1]) for series in result}

    disks = instances('node_filesystem_size_bytes{mountpoint="/"}')
    assert set(disks) == {h.name for h in lab.hosts}, f"\"/\" reported by {sorted(disks)} only"
    probes = instances('probe_success{job="app"}')
    assert probes == {probe["host"]: 1.0 for probe in app_probes(lab, node)}, f"probe_success: {probes}"
    for job, series in (("nginx", "nginx_up"), ("redis", "redis_up")):  # BalancerDown's and RedisDown's
        watched = {target["host"] for scraped in scrape_jobs(lab, node) if scraped["name"] == job
                   for target in scraped["targets"]}
        assert instances(series) == {name: 1.0 for name in watched}, f"{series}: {instances(series)}"
