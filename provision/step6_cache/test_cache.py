"""Step 6 checks on the cache hosts: memcached running on the private address only."""

TIERS = ("cache",)
# `lab check`: one line per check, what to try when it fails (lab/workshop.py prints it).
HINTS = {
    "test_memcached_listens_on_the_private_address_only": "`-l <cache host's IP>` (not 127.0.0.1 or 0.0.0.0) in /etc/memcached.conf, `systemctl restart memcached`; `ss -ltnp`",
}
PORT = 11211


def test_memcached_listens_on_the_private_address_only(host, node):
    assert host.service("memcached").is_running
    assert host.socket(f"tcp://{node.ip}:{PORT}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{PORT}").is_listening
    assert not host.socket(f"tcp://127.0.0.1:{PORT}").is_listening
