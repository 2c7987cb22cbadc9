"""Step 6 checks from the web and api hosts and the balancer: every cache host answers memcached's `version` to a web
or api host, and the balancer cannot reach it (the links are web → cache and api → cache only)."""

import pytest

from provision.step1_bootstrap.recipes import APP_SERVER_TIERS

TIERS = (*APP_SERVER_TIERS, "lb")
# `lab check`: one line per check, what to try when it fails (lab/workshop.py prints it).
HINTS = {
    "test_cache_hosts_answer_web_hosts_and_refuse_the_balancer": "memcached on the cache host's IP:11211; its /etc/nftables.conf accepts that port from web and api hosts only, `nft -f` it",
}
PORT = 11211
# Runs on the host: a memcached `version` round trip, or how it failed (the firewall drops: a timeout).
PROBE = ("python3 -c \"import socket,sys; s=socket.socket(); s.settimeout(1); "
         "s.connect((sys.argv[1], int(sys.argv[2]))); s.sendall(b'version\\r\\n'); "
         "print(s.recv(64).decode().split()[0])\" {ip} {port}")


def test_cache_hosts_answer_web_hosts_and_refuse_the_balancer(host, node, lab):
    caches = lab.tier("cache") if "cache" in lab.stack.tiers else ()
    if not caches:
        pytest.skip("this lab has no cache host: the site keeps its local-memory cache")
    for cache in caches:
        result = host.run(PROBE.format(ip=cache.ip, port=PORT))
        if node.tier in APP_SERVER_TIERS:
            assert result.rc == 0 and result.stdout.strip() == "VERSION", f"{node.name} → {cache.name}: {result.stderr}"
        else:
            assert result.rc != 0, f"{node.name} reached memcached on {cache.name}"
