"""Unit tests for the balancer pair (provision/step5_lbpair): the floating address in the topology, the VRRP link and
the firewall rule it makes, keepalived's and nginx's configuration for a pair, `lab status`'s holder line, and
`lab up --lb=3` refused in one line."""
from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from lab import lifecycle, stack as stacks
from lab.errors import TopologyError
from lab.lifecycle import HostStatus
from lab.recipes.scheduler import template_environment
from lab.services import services_of
from lab.stack import Link
from lab.testing import linux_topology, one_error_line, run_main
from lab.topology import Opening, Overrides
from provision.step5_balancer.recipes import site_values, upstream_hosts, upstream_servers
from provision.step5_lbpair.recipes import KEEPALIVED_UNIT, keepalived_values

PAIR = linux_topology(overrides=Overrides(counts={"lb": 2}))
ONE = linux_topology()


def test_two_balancers_share_the_lb_tiers_address_zero():
    assert [h.ip for h in PAIR.tier("lb")] == ["192.168.56.11", "192.168.56.12"]
    assert PAIR.floating_ip == "192.168.56.10"
    assert PAIR.site_address == "192.168.56.10"
    assert PAIR.addresses(PAIR.host("lb2")) == ("192.168.56.12", "192.168.56.10")
    assert PAIR.addresses(PAIR.host("web1")) == ("192.168.56.21",)
    other = linux_topology({"lab": {"subnet": "10.9.8.0/24"}}, overrides=Overrides(counts={"lb": 2}))
    assert other.floating_ip == "10.9.8.10"


def test_one_balancer_has_no_floating_address_and_nothing_changes():
    assert ONE.balancer_pair == () and ONE.floating_ip is None
    assert ONE.site_address == "192.168.56.11"
    assert ONE.addresses(ONE.host("lb1")) == ("192.168.56.11",)
    assert lifecycle.site_url(ONE) == "https://192.168.56.11"
    assert lifecycle.bench_plain_url(ONE) == "http://192.168.56.11:8080"
    assert services_of(ONE, "lb") == ("nginx",)


def test_the_site_the_bench_and_status_use_the_floating_address_with_a_pair():
    assert lifecycle.site_url(PAIR) == "https://192.168.56.10"
    assert lifecycle.bench_plain_url(PAIR) == "http://192.168.56.10:8080"
    assert services_of(PAIR, "lb") == ("nginx", KEEPALIVED_UNIT)
    assert services_of(PAIR, "web") == ("gunicorn",)


def test_a_host_given_the_floating_address_is_refused():
    with pytest.raises(TopologyError, match=r"hosts.web1.ip 192.168.56.10 is the balancer pair's floating address"):
        linux_topology({"hosts": {"web1": {"ip": "192.168.56.10"}}}, overrides=Overrides(counts={"lb": 2}))
    assert linux_topology({"hosts": {"web1": {"ip": "192.168.56.10"}}}).host("web1").ip == "192.168.56.10"


def test_a_link_of_another_protocol_has_no_port_and_a_tcp_link_needs_one():
    vrrp = Link("lb", "lb", 0, "vrrp", protocol="vrrp")
    assert str(vrrp) == "lb → lb vrrp vrrp"
    for bad in (dict(port=112, protocol="vrrp"), dict(port=0, protocol="tcp"), dict(port=1, protocol="udp")):
        with pytest.raises(ValueError):
            Link("lb", "lb", bad["port"], "x", protocol=bad["protocol"])


def test_vrrp_is_let_in_from_the_peer_only_and_only_with_a_pair():
    assert Opening(0, "vrrp", ("192.168.56.12",), "vrrp") in PAIR.inbound(PAIR.host("lb1"), "192.168.56.1")
    assert Opening(0, "vrrp", ("192.168.56.11",), "vrrp") in PAIR.inbound(PAIR.host("lb2"), "192.168.56.1")
    assert not [o for o in ONE.inbound(ONE.host("lb1"), "192.168.56.1") if o.protocol != "tcp"]
    assert not [o for o in PAIR.inbound(PAIR.host("web1"), "192.168.56.1") if o.protocol != "tcp"]
    rules = template_environment().get_template("step1_bootstrap/templates/nftables.conf.j2").render(
        host=PAIR.host("lb1"), topology=PAIR, rules=PAIR.inbound(PAIR.host("lb1"), "192.168.56.1"))
    assert "        meta l4proto 112 ip saddr { 192.168.56.12 } accept  # vrrp\n" in rules
    assert "        tcp dport 443 ip saddr { 192.168.56.0/24 } accept  # https\n" in rules


def keepalived_conf(topology, name: str) -> str:
    target = SimpleNamespace(topology=topology, host=topology.host(name))
    return template_environment().get_template("step5_lbpair/templates/keepalived.conf.j2").render(
        host=target.host, topology=topology, **keepalived_values(target, "eth0"))


def test_keepalived_speaks_unicast_to_the_peer_and_tracks_nginx():
    first, second = keepalived_conf(PAIR, "lb1").split(), keepalived_conf(PAIR, "lb2").split()
    for words, own, peer in ((first, "192.168.56.11", "192.168.56.12"), (second, "192.168.56.12", "192.168.56.11")):
        assert words[words.index("unicast_src_ip") + 1] == own
        assert words[words.index("unicast_peer") + 1:words.index("unicast_peer") + 4] == ["{", peer, "}"]
        assert words[words.index("virtual_ipaddress") + 1:words.index("virtual_ipaddress") + 5] == [
            "{", "192.168.56.10/24", "dev", "eth0"]
        assert "nopreempt" in words and words[words.index("state") + 1] == "BACKUP"
        assert words[words.index("track_script") + 1:words.index("track_script") + 3] == ["{", "nginx_running"]
        assert "mcast_src_ip" not in words
    assert int(first[first.index("priority") + 1]) > int(second[second.index("priority") + 1])


def test_nginx_of_a_pair_listens_on_its_own_and_the_floating_address():
    servers = upstream_servers(upstream_hosts(PAIR), {"web1"}, frozenset())
    site = template_environment().get_template("step5_balancer/templates/nginx-bank.conf.j2").render(
        host=PAIR.host("lb2"), topology=PAIR, **site_values(servers, PAIR.addresses(PAIR.host("lb2"))))
    for port in ("80", "443 ssl http2 default_server", "8080"):
        assert f"    listen 192.168.56.12:{port};" in site and f"    listen 192.168.56.10:{port};" in site
    assert "    server_name lb2 192.168.56.12 192.168.56.10;" in site


def test_status_says_which_balancer_holds_the_address():
    rows = [HostStatus("lb1", "lb", "192.168.56.11", "running", {}, None),
            HostStatus("lb2", "lb", "192.168.56.12", "running", {}, "192.168.56.10")]
    assert lifecycle.describe_holders(PAIR, rows).endswith("192.168.56.10 (the site's, keepalived): held by lb2")
    assert "held by no balancer" in lifecycle.describe_holders(PAIR, rows[:1])
    both = [rows[0].__class__(**{**rows[0].__dict__, "holds": "192.168.56.10"}), rows[1]]
    assert "held by lb1 and lb2 at once" in lifecycle.describe_holders(PAIR, both)


def test_the_full_preset_has_the_pair():
    assert stacks.current().presets["full"]["lb"] == 2


def test_up_with_three_balancers_is_one_line_and_exit_3(tmp_path, monkeypatch, capfd):
    for key in [k for k in os.environ if k.startswith("LAB_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(["up", "--lb=3"], capfd)
    assert code == TopologyError.exit_code == 3
    assert one_error_line(err) == "lab: error: --lb must be from 1 to 2 (got 3)"
    assert not (tmp_path / ".lab").exists()  # refused before anything was made
