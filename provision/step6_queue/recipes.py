"""Step 6 recipes: Redis on q1 (Celery's broker: the private address, a password, kept on disk), a Celery worker
running the site's release on every q host, and the site's queue settings wherever its code runs."""

from __future__ import annotations

import time

from lab.recipes import RecipeError, Target, recipe
from lab.system import gist
from lab.topology import Host, Topology
from provision.step1_bootstrap.recipes import APP_USER, CURRENT, SETTINGS, SITE_TIERS, VENV
from provision.step2_database.recipes import SETTINGS_FILES, STARTED_BEFORE_SETTINGS
from provision.step3_appserver.recipes import _in_current_release
from provision.step5_pooler.recipes import site_overlay
from provision.step6_queue import REDIS_PORT

REDIS_CONF = "/etc/redis/redis.conf"  # Debian's own file (dpkg-statoverride: redis:redis 0640), rewritten whole
REDIS_AUTH = "/etc/redis/lab-auth.conf"  # `requirepass`: root:redis 0640, included by redis.conf
REDIS_MEMORY_MB = 64  # of q1's 384 MB: a queue of small messages (a statement's id), never evicted
WORKER_UNIT = "bank-worker"
WORKER_SERVICE = f"/etc/systemd/system/{WORKER_UNIT}.service"
WORKER_CONCURRENCY = 2  # prefork processes per q host, each with its own database connection
WORKER_STOP_TIMEOUT_S = 60  # a warm shutdown waits for the running tasks (a statement takes well under a second)
WORKER_READY_S = 90  # how long a (re)started worker has to answer a ping: Django loads twice, on a busy machine
QUEUE_OVERLAY = "queue"  # the site's /etc/bank/bank.d/queue.toml: where its broker is (none: always-eager)


def broker(topology: Topology, client: Host) -> Host | None:
    """The q host whose Redis is the queue (the tier's first), as the client's links reach it; None without q hosts."""
    serving = topology.serving("queue", client=client)
    return serving[0] if serving else None


def celery(command: str) -> str:
    """The site's Celery app (`celery --app bank`) in the release `current` names, with the site's settings."""
    return f"cd {CURRENT} && BANK_CONFIG={SETTINGS} {VENV}/bin/celery --app bank {command}"


@recipe(tiers=("q",), first_only=True)
def redis(t: Target) -> None:
    """Redis on q1's private address only, asking every client for the lab's queue password, its queue on disk
    (appendonly: a queued statement survives a restart)."""
    t.packages("redis-server", "redis-tools")
    with t.owed("redis-restart") as earlier_change:
        # The password never reaches a command line: a file of redis's group only, written through stdin.
        changed = t.secret_file(REDIS_AUTH, f"requirepass {t.secrets['queue_password']}\n", "root", "redis", 0o640)
        changed |= t.template(REDIS_CONF, "step6_queue/templates/redis.conf.j2", 0o640, "redis", "redis",
                              port=REDIS_PORT, memory_mb=REDIS_MEMORY_MB, auth_file=REDIS_AUTH)
        t.service("redis-server", restart=changed or earlier_change)
    t.wait_for_port(t.host.ip, REDIS_PORT)


@recipe(tiers=SITE_TIERS, after=("step6_queue.redis",))
def site_queue(t: Target) -> None:
    """The site's broker, q1's Redis with the lab's password, in its settings (bank.d/queue.toml); with no q host
    none, and Celery runs every task in the request (always-eager). A web host's app server restarts host by host;
    a q host's worker restarts in its own recipe, on the settings' event."""
    queue = broker(t.topology, t.host)
    if queue is None:
        site_overlay(t, QUEUE_OVERLAY, {})
        return
    site_overlay(t, QUEUE_OVERLAY, {"queue_host": queue.ip, "queue_port": t.topology.port("queue", client=t.host),
                                    "queue_password": t.secrets["queue_password"]})


@recipe(tiers=("q",), after=("step6_queue.redis", "step6_queue.site_queue", "step2_database.schema_and_sample_data"))
def worker(t: Target) -> None:
    """A Celery worker of the site's release as the site's own unprivileged user, (re)started when its unit, its
    release or its settings changed; then it must answer a ping through the queue."""
    with t.owed("bank-worker-restart") as earlier_change:
        unit_changed = t.template(WORKER_SERVICE, "step6_queue/templates/bank-worker.service.j2", user=APP_USER,
                                  current=CURRENT, settings=SETTINGS, venv=VENV, concurrency=WORKER_CONCURRENCY,
                                  stop_timeout_s=WORKER_STOP_TIMEOUT_S)
        if unit_changed:
            t.run("systemctl daemon-reload")
        # Asked of the host too, not only of this run's events: a run interrupted between a switch and this restart.
        stale = t.notified("app-code", "app-config") or _worker_is_stale(t)
        restarted = t.service(WORKER_UNIT, restart=unit_changed or earlier_change or stale)
    if restarted or not _answers_ping(t, timeout_s=5):
        wait_for_ping(t)


def _worker_is_stale(t: Target) -> bool:
    """A running worker on another release than `current`, or started before the site's settings last changed."""
    if not t.test("systemctl is-active --quiet %s", WORKER_UNIT):
        return False
    if not _in_current_release(t):
        return True
    before = t.run("python3 -c %s %s %s", STARTED_BEFORE_SETTINGS, SETTINGS_FILES, "0").stdout.strip()
    return before not in ("", "[]")


def _answers_ping(t: Target, timeout_s: float) -> bool:
    return t.test(celery("inspect ping --destination %s --timeout %s"), f"worker@{t.host.name}", timeout_s,
                  user=APP_USER)


def wait_for_ping(t: Target, seconds: float = WORKER_READY_S) -> None:
    """A (re)started worker answers a ping through the queue before the recipe ends (a worker that cannot reach
    Redis or load the site fails this recipe, not `lab test`); `lab deploy` waits for it the same way."""
    deadline = time.monotonic() + seconds
    while not _answers_ping(t, timeout_s=3):
        if time.monotonic() > deadline:
            log = t.run("journalctl -u %s -n 5 --no-pager -o cat", WORKER_UNIT, check=False).stdout
            raise RecipeError(f"{WORKER_UNIT} does not answer a ping {seconds:.0f} s after it started: {gist(log)}")
        time.sleep(1)
