"""Step 5 checks of the balancer pair: keepalived on both balancers, VRRP unicast between them and let in from the
peer only, exactly one of them holding the floating address, nginx listening on it on both, and the site answering
through it from this machine, verified against the lab's CA. A lab with one balancer has no pair: skipped."""

import ssl
import urllib.request

import pytest

from lab.hostcheck import get_host
from lab.tls import ca_paths

TIERS = ("lb",)
# `lab check`: one line per check, what to try when it fails (lab/workshop.py prints it).
HINTS = {
    "test_keepalived_runs_with_unicast_vrrp_to_its_peer": "/etc/keepalived/keepalived.conf: `unicast_src_ip <this lb's IP>`, `unicast_peer { <the other lb's IP> }`; `systemctl enable --now keepalived`",
    "test_the_firewall_lets_vrrp_in_from_the_peer_only": "/etc/nftables.conf: `meta l4proto 112 ip saddr <the other lb's IP> accept` (VRRP is IP protocol 112), `systemctl restart nftables`",
    "test_exactly_one_balancer_holds_the_floating_address": "`lab status` says who holds it; both: they miss each other's adverts (firewall, unicast_peer); none: nginx down? `journalctl -u keepalived`",
    "test_nginx_listens_on_the_floating_address_too": "`listen <floating address>:443 ssl;` (and :80, :8080) beside the lb's own; net.ipv4.ip_nonlocal_bind = 1 lets the lb not holding it bind it",
    "test_the_site_answers_through_the_floating_address": "`curl --cacert \"$(lab ca)\" https://<floating address>/health/`; the certificate must name the floating address (`lab up` issues it anew)",
}
REQUEST_TIMEOUT_S = 30


@pytest.fixture
def pair(lab):
    if not lab.balancer_pair:
        pytest.skip("this lab has one balancer: no keepalived, no floating address (`lab up --lb=2` makes the pair)")
    return lab.balancer_pair


def holds(host, address):
    """Whether the testinfra host has the address on one of its interfaces."""
    return bool(host.run(f"ip -o -4 addr show to {address}/32").stdout.strip())


def test_keepalived_runs_with_unicast_vrrp_to_its_peer(host, node, pair):
    assert host.package("keepalived").is_installed
    assert host.service("keepalived").is_enabled
    assert host.service("keepalived").is_running
    peer = next(h for h in pair if h.name != node.name)
    words = host.file("/etc/keepalived/keepalived.conf").content_string.split()
    assert words[words.index("unicast_src_ip") + 1] == node.ip
    assert words[words.index("unicast_peer") + 1:words.index("unicast_peer") + 4] == ["{", peer.ip, "}"]


def test_the_firewall_lets_vrrp_in_from_the_peer_only(host, node, pair):
    peer = next(h for h in pair if h.name != node.name)
    with host.sudo():
        chain = host.check_output("nft list chain inet filter input")
    vrrp = [line.split() for line in chain.splitlines() if "l4proto" in line and ("112" in line or "vrrp" in line)]
    assert len(vrrp) == 1, f"VRRP rules in {node.name}'s input chain: {vrrp}"
    assert vrrp[0][vrrp[0].index("saddr") + 1] == peer.ip and vrrp[0][-1] == "accept", vrrp[0]


def test_exactly_one_balancer_holds_the_floating_address(host, lab, labdir, pair):
    holders = [h.name for h in pair if holds(get_host(labdir, h.name), lab.floating_ip)]
    assert len(holders) == 1, f"{lab.floating_ip} is held by {holders or 'no balancer'}"


def test_nginx_listens_on_the_floating_address_too(host, node, lab, pair):
    for port in (80, 443, lab.port("http-plain")):
        assert host.socket(f"tcp://{node.ip}:{port}").is_listening
        assert host.socket(f"tcp://{lab.floating_ip}:{port}").is_listening


def test_the_site_answers_through_the_floating_address(node, lab, labdir, pair):
    context = ssl.create_default_context(cafile=str(ca_paths(labdir.path)[0]))  # the certificate names the address
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    with direct.open(f"https://{lab.floating_ip}/health/", timeout=REQUEST_TIMEOUT_S) as response:
        assert response.status == 200
