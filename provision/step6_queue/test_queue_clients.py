"""Step 6 checks from the web hosts and the balancer: q1's Redis answers a web host (and asks it for the password)
but not the balancer; a statement asked for on web1 is prepared by a q host's worker (with no q host: in the
request, Celery's always-eager) and is read back ready."""

import json

import pytest

TIERS = ("web", "lb")
# `lab check`: one line per check, what to try when it fails (lab/workshop.py prints it).
HINTS = {
    "test_the_queue_answers_web_hosts_and_refuses_the_balancer": "Redis on q1's IP:6379; q1's /etc/nftables.conf accepts that port from web and q hosts only, `nft -f` it",
    "test_a_statement_asked_for_on_web1_is_prepared_by_a_queue_worker": "`lab ssh q1 journalctl -u bank-worker`; web1's /etc/bank/bank.d/queue.toml names q1 (none without q hosts: the request prepares it)",
}
PORT = 6379
# Runs on the host: one Redis PING without a password: Redis's first answer, or how it failed (a drop: a timeout).
PROBE = ("python3 -c \"import socket,sys; s=socket.socket(); s.settimeout(2); "
         "s.connect((sys.argv[1], int(sys.argv[2]))); s.sendall(b'PING\\r\\n'); "
         "print(s.recv(64).decode().split()[0])\" {ip} {port}")
ROUND_TRIP = ("cd /srv/bank/current && sudo -u bank BANK_CONFIG=/etc/bank/bank.toml /srv/bank/venv/bin/python "
              "manage.py statement_round_trip --user customer0001 --timeout 60")


def test_the_queue_answers_web_hosts_and_refuses_the_balancer(host, node, lab):
    queues = lab.tier("q") if "q" in lab.stack.tiers else ()
    if not queues:
        pytest.skip("this lab has no q host: the site runs its tasks in the request")
    result = host.run(PROBE.format(ip=queues[0].ip, port=PORT))
    if node.tier == "web":
        assert result.rc == 0 and result.stdout.strip() == "-NOAUTH", f"{node.name} → {queues[0].name}: {result.stderr}"
    else:
        assert result.rc != 0, f"{node.name} reached Redis on {queues[0].name}"


def test_a_statement_asked_for_on_web1_is_prepared_by_a_queue_worker(host, node, lab):
    if node.name != lab.tier("web")[0].name:
        pytest.skip("asked for once, from web1")
    with host.sudo():
        result = host.run(ROUND_TRIP)
    assert result.rc == 0, f"the statement was not prepared: {result.stdout} {result.stderr[-300:]}"
    done = json.loads(result.stdout.strip().splitlines()[-1])
    queues = {q.name for q in lab.tier("q")} if "q" in lab.stack.tiers else set()
    assert done["status"] == "ready"
    # A q host's worker prepared it; with none, web1's own command did (always-eager).
    assert done["prepared_by"] in (queues or {node.name}), done
