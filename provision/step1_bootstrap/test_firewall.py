"""Step 1 firewall checks: default-drop input, and every port the stack's links open reachable only as they say."""

import errno
import inspect
import ipaddress
import json
import socket

from lab.stack import all_tiers

TIERS = all_tiers()
# `lab check`: one line per check, what to try when it fails (lab/workshop.py prints it).
HINTS = {
    "test_input_policy_is_drop": "/etc/nftables.conf: `table inet filter` with an input chain of `policy drop;` (as docs/steps/1-bootstrap.md), `systemctl enable --now nftables`",
    "test_tier_ports_open_only_to_the_tier_in_front": "accept only: tcp 22 from the lab's .1; lb 80,443 from the subnet, 8080 from .1; web 8000 from lb1; db 5432 from web; `systemctl restart nftables`",
}

# What a port's probe comes to. "open" (connected), "closed" (a reset: nothing listens), "filtered" (no answer, though
# the host answered ARP: a DROP rule), "rejected" (an ICMP error from a host that answered ARP: a REJECT rule) or
# "unreachable" (the host never answered ARP, or no route: down, not firewalled). The three functions below are pure,
# so unit tests (tests/test_unit_firewall_probe.py) feed them fake outcomes; PROBE sends their very source to the
# host. They may use only the modules PROBE imports, and no quote or backtick but double quotes: PROBE travels in
# single quotes on the command line.


def connect_outcome(error):
    """What a connect came to, from its error (None: it connected): open, closed, silent, icmp or unreachable."""
    if error is None:
        return "open"
    if isinstance(error, ConnectionRefusedError):
        return "closed"
    if isinstance(error, socket.timeout):
        return "silent"
    return "icmp" if error.errno == errno.EHOSTUNREACH else "unreachable"


def answered_arp(neigh):
    """Whether the output of ip neigh show to IP has a state in which the host answered ARP (a link-layer address)."""
    states = neigh.split()
    return any(w in states for w in ("REACHABLE", "STALE", "DELAY", "PROBE", "PERMANENT"))


def classify(error, neigh):
    """A port as the check reports it, from its connect error and the output of ip neigh show to IP for its host
    (read after the probes): silence or an ICMP error is the firewall (filtered, rejected) only from a host that
    answered ARP, else the host is unreachable."""
    raw = connect_outcome(error)
    if raw not in ("silent", "icmp"):
        return raw
    if not answered_arp(neigh):
        return "unreachable"
    return "filtered" if raw == "silent" else "rejected"


# Runs on the host: tries every target at once, then reads the neighbour table (the probes made the ARP requests).
PROBE = "\n".join([
    "import errno, json, socket, subprocess, sys, concurrent.futures as f",
    inspect.getsource(connect_outcome), inspect.getsource(answered_arp), inspect.getsource(classify), """
def connect_error(target):
    ip, port = target
    s = socket.socket(); s.settimeout(0.3)  # the lab bridge answers in well under 1 ms
    try:
        s.connect((ip, port)); return None
    except OSError as e:
        return e
    finally:
        s.close()
def neighbour(ip):
    return subprocess.run(["ip", "neigh", "show", "to", ip], capture_output=True, text=True).stdout
targets = json.loads(sys.argv[1])
with f.ThreadPoolExecutor(len(targets) or 1) as pool:
    errors = list(pool.map(connect_error, targets))
neighbours = {ip: neighbour(ip) for ip in {ip for ip, _ in targets}}
print(json.dumps([classify(e, neighbours[ip]) for (ip, _), e in zip(targets, errors)]))
"""])
REFUSED_BY_FIREWALL = ("filtered", "rejected")


def test_input_policy_is_drop(host):
    assert host.service("nftables").is_enabled, "nftables is not enabled (is it installed?)"
    with host.sudo():
        chain = host.run("nft list chain inet filter input")
    assert chain.rc == 0, "no input chain in table inet filter (`nft list ruleset` shows what is loaded)"
    assert "policy drop" in chain.stdout, "the input chain of table inet filter does not have policy drop"


def admitted(address, sources):
    """Whether an address is among a link's sources (addresses or networks; none means from anywhere)."""
    return not sources or any(ipaddress.ip_address(address) in ipaddress.ip_network(s) for s in sources)


def test_tier_ports_open_only_to_the_tier_in_front(host, node, lab, facts):
    # Every port a link opens on another host, and whether some link lets this host in: from the model alone.
    expected = {}
    for other in lab.hosts:
        if other.name != node.name:
            for opening in lab.inbound(other, facts.control_address):
                if opening.protocol != "tcp":
                    continue  # a probe connects over TCP; the balancers' VRRP is step 5's lbpair check
                key = (other.name, other.ip, opening.port)
                expected[key] = expected.get(key, False) or admitted(node.ip, opening.sources)
    targets = [[ip, port] for _, ip, port in expected]
    result = json.loads(host.check_output(f"python3 -c '{PROBE}' '{json.dumps(targets)}'"))
    unreachable = sorted({name for ((name, _, _), _), outcome in zip(expected.items(), result) if outcome == "unreachable"})
    assert not unreachable, f"{node.name} cannot reach {unreachable} at all (no ARP answer or no route): not a firewall's doing"
    for ((name, _, port), allowed), outcome in zip(expected.items(), result):
        if allowed:
            assert outcome in ("open", "closed"), f"{node.name} → {name}:{port} is {outcome} by the firewall, though a link allows it"
        else:
            assert outcome in REFUSED_BY_FIREWALL, f"{node.name} → {name}:{port} is {outcome}: the firewall should refuse it"
