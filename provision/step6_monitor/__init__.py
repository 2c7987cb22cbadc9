"""Step 6: a monitor host (monitor1, 0 by default) running Prometheus, Alertmanager and the blackbox exporter, and
the exporters from Debian on the hosts it watches; registers the tier and every scrape link."""

from __future__ import annotations

from dataclasses import dataclass

from lab.stack import EVERY_TIER, MACHINE, Link, TierSpec, register_tier
from provision.step6_api import API_PURPOSE  # imported first: the api tier is registered before a link names it
from provision.step6_queue import REDIS_PORT  # imported first: the q tier is registered before a link names it

STEP = 6
TITLE = "Tune: a monitor host (Prometheus, Alertmanager)"
MONITOR_TIER = "monitor"
PROMETHEUS_PORT = 9090
ALERTMANAGER_PORT = 9093
APP_PROBE_PURPOSE = "app-probe"  # the blackbox exporter on monitor1 asking each web host's app server for /health/
APP_PORT = 8000  # step 1's APP_PORT (provision.step1_bootstrap.recipes; a unit test keeps the two equal)
# nginx's connection counts, on the balancer's loopback only (its exporter runs beside it)
STUB_STATUS_LISTEN, STUB_STATUS_PATH = "127.0.0.1:8081", "/stub_status"
STUB_STATUS_URL = f"http://{STUB_STATUS_LISTEN}{STUB_STATUS_PATH}"
PROCESS_EXPORTER_CONFIG = "/etc/prometheus/lab-process-exporter.yml"


@dataclass(frozen=True)
class Exporter:
    """A Prometheus exporter Debian packages, on every host of the tier it watches: its scrape job, its port, and its
    package (which is also its systemd unit and the name of its /etc/default file)."""

    job: str
    tier: str  # a tier name, or EVERY_TIER
    port: int
    package: str
    args: str  # its command-line flags; {address} and {port}: where it listens (recipes.exporter_address); {host_ip}
    first_host_only: bool = False  # what it watches runs on the tier's first host only (Redis on q1)
    password_env: str = ""  # the variable its password goes in (its /etc/default file is then 0600)
    password_secret: str = ""  # which of the lab's secrets (.lab/secrets.toml) that password is

    @property
    def purpose(self) -> str:
        """Its link's purpose: what the scrape targets and the firewall follow."""
        return f"{self.job}-metrics"


# What Prometheus scrapes, one entry per exporter: the links below, the exporter's address and flags, Prometheus' scrape
# jobs and the checks all follow this table; recipes.py has a five-line recipe per entry naming its package.
# memcached (the cache tier): Debian 12 has no exporter package.
EXPORTERS = (
    # Only "/" is watched (the disk alert): every other mount point excluded, and overlay (a local host's root) not
    # excluded as node_exporter's default list does.
    Exporter("node", EVERY_TIER, 9100, "prometheus-node-exporter",
             "--web.listen-address={address}:{port} --collector.filesystem.mount-points-exclude=^/.+ "
             "--collector.filesystem.fs-types-exclude=^(proc|sysfs|tmpfs|devtmpfs|cgroup)"),
    # nginx's stub_status on the balancer's loopback; retries while nginx is starting.
    Exporter("nginx", "lb", 9113, "prometheus-nginx-exporter",
             f"-web.listen-address={{address}}:{{port}} -nginx.scrape-uri={STUB_STATUS_URL} "
             "-nginx.retries=20 -nginx.retry-interval=3s"),
    # Connects over PostgreSQL's Unix socket as the role "prometheus" (pg_monitor), by peer authentication.
    Exporter("postgres", "db", 9187, "prometheus-postgres-exporter", "--web.listen-address={address}:{port}"),
    # The host's own processes, as one group: CPU seconds and resident memory. A local (nspawn) host sees
    # the machine's /proc/stat and /proc/meminfo, so the node exporter's CPU and memory are the machine's there; the
    # processes in the host's own PID namespace are the host's, under either provider (`lab bench` graphs them).
    Exporter("process", EVERY_TIER, 9256, "prometheus-process-exporter",
             f"-web.listen-address={{address}}:{{port}} -config.path={PROCESS_EXPORTER_CONFIG}"),
    # Redis on q1 (the queue tier), asked with the queue's password, which reaches the exporter in its environment.
    Exporter("redis", "q", 9121, "prometheus-redis-exporter",
             f"-web.listen-address={{address}}:{{port}} -redis.addr=redis://{{host_ip}}:{REDIS_PORT}",
             first_host_only=True, password_env="REDIS_PASSWORD", password_secret="queue_password"),
)

register_tier(
    TierSpec(MONITOR_TIER, 90, default_count=0, min_count=0, max_count=1, memory_mb=512, cpus=1,
             services=("prometheus", "prometheus-alertmanager", "prometheus-blackbox-exporter")),
    links=(
        *(Link(MONITOR_TIER, e.tier, e.port, e.purpose) for e in EXPORTERS),
        # "web host down" means its app server stopped answering, not the host: probed on the app server's own port
        Link(MONITOR_TIER, "web", APP_PORT, APP_PROBE_PURPOSE),
        Link(MONITOR_TIER, API_PURPOSE, APP_PORT, APP_PROBE_PURPOSE),  # an api host is a web host serving /api/ only
        Link(MACHINE, MONITOR_TIER, PROMETHEUS_PORT, "prometheus"),  # lab (checks, status, the bench) asks Prometheus
        Link(MACHINE, MONITOR_TIER, ALERTMANAGER_PORT, "alertmanager"),
    ),
    presets={"full": 1},
)
