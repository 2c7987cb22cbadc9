"""Step 6 checks on the q hosts: Redis on q1's private address only, asking for the lab's password and keeping its
queue on disk; on every q host a Celery worker of the site, as the site's user, answering a ping through the queue."""

import json
import shlex

TIERS = ("q",)
# `lab check`: one line per check, what to try when it fails (lab/workshop.py prints it).
HINTS = {
    "test_redis_listens_on_q1s_private_address_only": "`bind <q1's IP>` (not 127.0.0.1 or 0.0.0.0) in /etc/redis/redis.conf, `systemctl restart redis-server`; `ss -ltnp`; q2.. run no Redis",
    "test_redis_asks_for_the_password_and_keeps_the_queue_on_disk": "`requirepass` in /etc/redis/lab-auth.conf (root:redis 0640, included by redis.conf), `appendonly yes`; `systemctl restart redis-server`",
    "test_the_worker_runs_as_the_site_user_and_every_worker_answers_a_ping": "`systemctl status bank-worker`, `journalctl -u bank-worker`: User=bank, the site's queue_host/queue_password in /etc/bank/bank.d/queue.toml",
}
PORT = 6379
AUTH_FILE = "/etc/redis/lab-auth.conf"
# Runs as root on q1: redis-cli with the password read from its file into REDISCLI_AUTH, never onto a command line.
REDIS_CLI = "REDISCLI_AUTH=\"$(sed -n 's/^requirepass //p' {auth})\" redis-cli -h {ip} -p {port} {command}"
CELERY = ("cd /srv/bank/current && sudo -u bank BANK_CONFIG=/etc/bank/bank.toml /srv/bank/venv/bin/celery --app bank "
          "inspect ping --timeout 10 --json")
WORKER = "celery --app bank worker"


def redis_cli(host, node, command, authenticated=True):
    line = REDIS_CLI.format(auth=AUTH_FILE, ip=node.ip, port=PORT, command=command)
    if not authenticated:
        line = f"redis-cli -h {node.ip} -p {PORT} {command}"
    with host.sudo():
        return host.run(f"sh -c {shlex.quote(line)}")


def test_redis_listens_on_q1s_private_address_only(host, node, lab):
    if node.name != lab.tier("q")[0].name:
        assert not host.socket(f"tcp://0.0.0.0:{PORT}").is_listening, f"{node.name} runs a Redis of its own"
        assert not host.socket(f"tcp://{node.ip}:{PORT}").is_listening, f"{node.name} runs a Redis of its own"
        return
    assert host.service("redis-server").is_running
    assert host.socket(f"tcp://{node.ip}:{PORT}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{PORT}").is_listening
    assert not host.socket(f"tcp://127.0.0.1:{PORT}").is_listening


def test_redis_asks_for_the_password_and_keeps_the_queue_on_disk(host, node, lab):
    if node.name != lab.tier("q")[0].name:
        return  # Redis runs on q1 only (the check above proves q2.. have none)
    with host.sudo():
        auth = host.file(AUTH_FILE)
        assert (auth.user, auth.group, auth.mode) == ("root", "redis", 0o640)
    anonymous = redis_cli(host, node, "ping", authenticated=False)
    assert "NOAUTH" in anonymous.stdout + anonymous.stderr and "PONG" not in anonymous.stdout
    assert redis_cli(host, node, "ping").stdout.strip() == "PONG"
    assert redis_cli(host, node, "config get appendonly").stdout.split() == ["appendonly", "yes"]


def test_the_worker_runs_as_the_site_user_and_every_worker_answers_a_ping(host, node, lab):
    assert host.service("bank-worker").is_running
    assert host.run(f"pgrep -u bank -f {shlex.quote(WORKER)}").rc == 0, "no worker process of the site's user bank"
    assert host.run(f"pgrep -u root -f {shlex.quote(WORKER)}").rc == 1, "a worker process runs as root"
    with host.sudo():
        result = host.run(CELERY)
    assert result.rc == 0, f"no worker answered a ping from {node.name} (exit {result.rc})"
    replies = json.loads(result.stdout)  # {"worker@q1": {"ok": "pong"}, ...}
    assert replies == {f"worker@{q.name}": {"ok": "pong"} for q in lab.tier("q")}
