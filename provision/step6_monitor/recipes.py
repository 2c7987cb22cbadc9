"""Step 6 recipes: Prometheus, Alertmanager and the blackbox exporter on the monitor host, and on every host it
watches the exporters of provision/step6_monitor's EXPORTERS table; each listens on its host's private address."""

from __future__ import annotations

from typing import Any

from lab.recipes import RecipeError, Target, recipe
from lab.stack import EVERY_TIER, all_tiers
from lab.topology import Host, Topology
from provision.step2_database.recipes import psql_script
from provision.step3_appserver.recipes import HEALTH_PATH
from provision.step6_monitor import (ALERTMANAGER_PORT, APP_PROBE_PURPOSE, EXPORTERS, MONITOR_TIER,
                                     PROCESS_EXPORTER_CONFIG, PROMETHEUS_PORT, STUB_STATUS_LISTEN, STUB_STATUS_PATH,
                                     Exporter)

LOOPBACK = "127.0.0.1"
PROCESS_GROUP = "host"  # the process exporter's one group: every process of the host
PROMETHEUS_CONFIG = "/etc/prometheus/prometheus.yml"
ALERT_RULES = "/etc/prometheus/lab-alerts.yml"
ALERTMANAGER_CONFIG = "/etc/prometheus/alertmanager.yml"
BLACKBOX_CONFIG = "/etc/prometheus/blackbox.yml"
BLACKBOX_PORT = 9115  # on monitor1's loopback: only its own Prometheus asks it to probe
STUB_STATUS_CONF = "/etc/nginx/conf.d/lab-stub-status.conf"
POSTGRES_EXPORTER_ROLE = "prometheus"  # the exporter's own system user: PostgreSQL's peer authentication admits it
# Short on purpose, so an alert fires within seconds (docs/monitor.md measures it): a scrape and an evaluation every
# 5 s, a target down for 10 s (two failed scrapes in a row) fires.
SCRAPE_INTERVAL_S = 5
EVALUATION_INTERVAL_S = 5
DOWN_FOR_S = 10
# The few hours a lab lives, on a 512 MB host: Prometheus holds about 2 h of samples in memory anyway.
RETENTION = "6h"
REPLICATION_LAG_BYTES = 16 * 1024 * 1024  # WAL a standby has not replayed yet (one WAL segment = 16 MB)
DISK_FREE_BELOW = 0.10  # of "/"


def scrapers(topology: Topology, host: Host, exporter: Exporter) -> tuple[Host, ...]:
    """The monitor hosts that scrape this host's exporter (its link's clients); none: the exporter has no business here."""
    if host.tier not in exporter_tiers(topology, exporter):
        return ()
    if exporter.first_host_only and topology.tier(host.tier)[0].name != host.name:
        return ()
    return topology.clients(host, exporter.purpose)


def exporter_tiers(topology: Topology, exporter: Exporter) -> tuple[str, ...]:
    return tuple(topology.stack.tiers) if exporter.tier == EVERY_TIER else (exporter.tier,)


def exporter_address(topology: Topology, host: Host, exporter: Exporter) -> str:
    """Where the exporter listens: the host's private address when another host scrapes it (its link opens the port
    there), loopback when only the host's own Prometheus does (monitor1's node exporter: no link leads a host to
    itself, so no socket of it may face the network)."""
    others = [h for h in scrapers(topology, host, exporter) if h.name != host.name]
    return host.ip if others else LOOPBACK


def last_line(output: str) -> str:
    """What a checking tool said last (its verdict), or that it said nothing."""
    lines = output.strip().splitlines()
    return lines[-1] if lines else "(no output)"


def exporter_args(topology: Topology, host: Host, exporter: Exporter) -> str:
    return exporter.args.format(address=exporter_address(topology, host, exporter), port=exporter.port, host_ip=host.ip)


@recipe(tiers=("lb",), after=("step5_balancer.nginx",))
def nginx_stub_status(t: Target) -> None:
    """nginx's connection counts on the balancer's loopback for its exporter, while a monitor host scrapes it."""
    nginx_exporter = next(e for e in EXPORTERS if e.job == "nginx")
    if scrapers(t.topology, t.host, nginx_exporter):
        changed = t.template(STUB_STATUS_CONF, "step6_monitor/templates/nginx-stub-status.conf.j2",
                             listen=STUB_STATUS_LISTEN, location=STUB_STATUS_PATH)
    else:
        changed = t.absent(STUB_STATUS_CONF)
    if changed and t.test("systemctl is-active --quiet nginx"):
        check = t.run("nginx -t", check=False)
        if not check.ok:
            raise RecipeError(f"nginx rejects {STUB_STATUS_CONF}: {last_line(check.stderr)}")
        t.run("systemctl reload nginx")
        t.changed("reloaded nginx for its stub_status")


@recipe(tiers=("db",), requires=("step2_database.postgresql",))
def postgres_monitor_role(t: Target) -> None:
    """On the primary (a standby gets it by replication): the exporter's role, a member of pg_monitor only, no
    password: it connects over the Unix socket as the system user of the same name (pg_hba's `local ... peer`)."""
    postgres_exporter = next(e for e in EXPORTERS if e.job == "postgres")
    if t.host.name != t.topology.db.primary or not scrapers(t.topology, t.host, postgres_exporter):
        return
    role = POSTGRES_EXPORTER_ROLE
    found = t.run("psql -XtAc %s", f"SELECT pg_has_role('{role}', 'pg_monitor', 'member') FROM pg_roles "
                                   f"WHERE rolname = '{role}'", user="postgres").stdout.strip()
    if found == "t":
        return
    create = "" if found else f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;\n"
    psql_script(t, f"{create}GRANT pg_monitor TO {role};\n")
    t.changed(f"{'created role' if create else 'granted pg_monitor to'} {role}")


def exporter_wanted(t: Target, job: str) -> Exporter | None:
    """The table's exporter of that job when a monitor host scrapes it on this host; else None, once it is stopped
    (and left installed) should an earlier run have started it, so no socket outlives its link."""
    exporter = next(e for e in EXPORTERS if e.job == job)
    if scrapers(t.topology, t.host, exporter):
        return exporter
    unit = exporter.package
    if t.test("systemctl is-active --quiet %s || systemctl is-enabled --quiet %s", unit, unit):
        t.run("systemctl disable --now --quiet %s", unit)
        t.changed(f"stopped {unit}: no monitor host scrapes it")
    return None


def serve_exporter(t: Target, exporter: Exporter, config: tuple[str, str, dict[str, Any]] | None = None) -> None:
    """An installed exporter with its flags (and environment), and its config file if it has one (path, template,
    values), listening where its link says."""
    unit = exporter.package
    with t.owed(f"{unit}-restart") as earlier_change:
        changed = t.template(config[0], config[1], **config[2]) if config else False
        # systemd reads the file as root: 0600 keeps a password in it from everyone else
        changed |= t.template(f"/etc/default/{unit}", "step6_monitor/templates/exporter.default.j2",
                              0o600 if exporter.password_env else 0o644,
                              unit=unit, args=exporter_args(t.topology, t.host, exporter),
                              environment=exporter_environment(t, exporter))
        t.service(unit, restart=changed or earlier_change)
    t.wait_for_port(exporter_address(t.topology, t.host, exporter), exporter.port)


# One recipe per exporter of the table, each naming its package (lab/machine-packages.toml lists them by step).
@recipe(tiers=all_tiers())
def node_exporter(t: Target) -> None:
    exporter = exporter_wanted(t, "node")
    if exporter:
        t.packages("prometheus-node-exporter")
        serve_exporter(t, exporter)


@recipe(tiers=("lb",), after=("step6_monitor.nginx_stub_status",))
def nginx_exporter(t: Target) -> None:
    exporter = exporter_wanted(t, "nginx")
    if exporter:
        t.packages("prometheus-nginx-exporter")
        serve_exporter(t, exporter)


@recipe(tiers=("db",), after=("step6_monitor.postgres_monitor_role",))
def postgres_exporter(t: Target) -> None:
    exporter = exporter_wanted(t, "postgres")
    if exporter:
        t.packages("prometheus-postgres-exporter")
        serve_exporter(t, exporter)


@recipe(tiers=all_tiers())
def process_exporter(t: Target) -> None:
    exporter = exporter_wanted(t, "process")
    if exporter:
        t.packages("prometheus-process-exporter")
        serve_exporter(t, exporter, (PROCESS_EXPORTER_CONFIG, "step6_monitor/templates/process-exporter.yml.j2",
                                     {"group_name": PROCESS_GROUP}))


# Not after step6_queue.redis (a later step-6 package): the exporter starts without Redis and reports redis_up 0
# until Redis answers; the scrape target is up either way, and the checks run once both are.
@recipe(tiers=("q",), first_only=True)
def redis_exporter(t: Target) -> None:
    exporter = exporter_wanted(t, "redis")
    if exporter:
        t.packages("prometheus-redis-exporter")
        serve_exporter(t, exporter)


def exporter_environment(t: Target, exporter: Exporter) -> dict[str, str]:
    """Variables an exporter reads besides its flags: the postgres exporter's connection (the Unix socket, peer), the
    password of what it watches (Redis')."""
    if exporter.job == "postgres":
        return {"DATA_SOURCE_NAME": f"user={POSTGRES_EXPORTER_ROLE} host=/run/postgresql dbname=postgres sslmode=disable"}
    if exporter.password_env:
        return {exporter.password_env: t.secrets[exporter.password_secret]}
    return {}


@recipe(tiers=(MONITOR_TIER,))
def blackbox_exporter(t: Target) -> None:
    """The blackbox exporter on monitor1's loopback: Prometheus asks it to GET each web host's /health/."""
    t.packages("prometheus-blackbox-exporter")
    with t.owed("blackbox-restart") as earlier_change:
        changed = t.template(BLACKBOX_CONFIG, "step6_monitor/templates/blackbox.yml.j2")
        changed |= t.template("/etc/default/prometheus-blackbox-exporter", "step6_monitor/templates/exporter.default.j2",
                              unit="prometheus-blackbox-exporter", environment={},
                              args=f"--config.file={BLACKBOX_CONFIG} --web.listen-address={LOOPBACK}:{BLACKBOX_PORT}")
        t.service("prometheus-blackbox-exporter", restart=changed or earlier_change)
    t.wait_for_port(LOOPBACK, BLACKBOX_PORT)


@recipe(tiers=(MONITOR_TIER,))
def alertmanager(t: Target) -> None:
    """Alertmanager on monitor1's private address, alone (no cluster port), its one receiver sending nothing anywhere."""
    t.packages("prometheus-alertmanager")
    with t.owed("alertmanager-restart") as earlier_change:
        changed = t.template(ALERTMANAGER_CONFIG, "step6_monitor/templates/alertmanager.yml.j2")
        if changed or earlier_change:
            check = t.run("amtool check-config %s", ALERTMANAGER_CONFIG, check=False)
            if not check.ok:
                raise RecipeError(f"amtool rejects {ALERTMANAGER_CONFIG}: {last_line(check.stdout + check.stderr)}")
        # An empty cluster address turns the gossip port (9094, TCP and UDP, on every address) off.
        changed |= t.template("/etc/default/prometheus-alertmanager", "step6_monitor/templates/exporter.default.j2",
                              unit="prometheus-alertmanager", environment={},
                              args=(f"--config.file={ALERTMANAGER_CONFIG} --storage.path=/var/lib/prometheus/alertmanager/ "
                                    f"--web.listen-address={t.host.ip}:{ALERTMANAGER_PORT} --cluster.listen-address="))
        t.service("prometheus-alertmanager", restart=changed or earlier_change)
    t.wait_for_port(t.host.ip, ALERTMANAGER_PORT)


@recipe(tiers=(MONITOR_TIER,))
def prometheus(t: Target) -> None:
    """Prometheus on monitor1's private address: every exporter the links lead it to, each web host's app server
    through the blackbox exporter, the alert rules, Alertmanager; a few hours of samples."""
    t.packages("prometheus")
    with t.owed("prometheus-restart") as earlier_change:
        reload = t.template(ALERT_RULES, "step6_monitor/templates/lab-alerts.yml.j2", **alert_values())
        reload |= t.template(PROMETHEUS_CONFIG, "step6_monitor/templates/prometheus.yml.j2",
                             **prometheus_values(t.topology, t.host))
        if reload or earlier_change:
            check = t.run("promtool check config %s", PROMETHEUS_CONFIG, check=False)
            if not check.ok:
                raise RecipeError(f"promtool rejects {PROMETHEUS_CONFIG}: {last_line(check.stderr or check.stdout)}")
        restart = t.template("/etc/default/prometheus", "step6_monitor/templates/exporter.default.j2",
                             unit="prometheus", environment={},
                             args=(f"--config.file={PROMETHEUS_CONFIG} --storage.tsdb.path=/var/lib/prometheus/metrics2/ "
                                   f"--storage.tsdb.retention.time={RETENTION} "
                                   f"--web.listen-address={t.host.ip}:{PROMETHEUS_PORT}"))
        t.service("prometheus", restart=restart or earlier_change, reload=reload)
    t.wait_for_port(t.host.ip, PROMETHEUS_PORT)


def alert_values() -> dict[str, Any]:
    return {"down_for": f"{DOWN_FOR_S}s", "replication_lag_bytes": REPLICATION_LAG_BYTES,
            "disk_free_below": DISK_FREE_BELOW, "disk_free_percent": round(DISK_FREE_BELOW * 100)}


def scrape_jobs(topology: Topology, monitor: Host) -> list[dict[str, Any]]:
    """One job per exporter the links lead this monitor host to, its targets each with the host's name."""
    jobs = []
    for exporter in EXPORTERS:
        hosts = [h for h in topology.serving(exporter.purpose, client=monitor) if scrapers(topology, h, exporter)]
        if hosts:
            jobs.append({"name": exporter.job, "targets": [
                {"address": f"{exporter_address(topology, h, exporter)}:{exporter.port}", "host": h.name, "tier": h.tier}
                for h in hosts]})
    return jobs


def app_probes(topology: Topology, monitor: Host) -> list[dict[str, str]]:
    """Each web host's app server, as the blackbox exporter GETs it: its health URL and the host's name."""
    hosts = topology.serving(APP_PROBE_PURPOSE, client=monitor)
    if not hosts:
        return []
    port = topology.port(APP_PROBE_PURPOSE, client=monitor)
    return [{"url": f"http://{h.ip}:{port}{HEALTH_PATH}", "host": h.name, "tier": h.tier} for h in hosts]


def prometheus_values(topology: Topology, monitor: Host) -> dict[str, Any]:
    return {"scrape_interval": f"{SCRAPE_INTERVAL_S}s", "scrape_timeout": f"{SCRAPE_INTERVAL_S - 1}s",
            "evaluation_interval": f"{EVALUATION_INTERVAL_S}s", "rules": ALERT_RULES,
            "prometheus": f"{monitor.ip}:{PROMETHEUS_PORT}", "alertmanager": f"{monitor.ip}:{ALERTMANAGER_PORT}",
            "blackbox": f"{LOOPBACK}:{BLACKBOX_PORT}", "jobs": scrape_jobs(topology, monitor),
            "probes": app_probes(topology, monitor)}
