"""Step 1 firewall checks: default-drop input, and every port the stack's links open reachable only as they say."""

import ipaddress
import json

from lab.stack import all_tiers

TIERS = all_tiers()

# Runs on the host: tries every target at once; "filtered" means the SYN was dropped (no answer).
PROBE = """
import json, socket, sys, concurrent.futures as f
def probe(target):
    ip, port = target
    s = socket.socket(); s.settimeout(0.3)  # the lab bridge answers in well under 1 ms
    try:
        s.connect((ip, port)); return "open"
    except ConnectionRefusedError:
        return "closed"
    except OSError:
        return "filtered"
    finally:
        s.close()
targets = json.loads(sys.argv[1])
with f.ThreadPoolExecutor(len(targets) or 1) as pool:
    print(json.dumps(list(pool.map(probe, targets))))
"""


def test_input_policy_is_drop(host):
    assert host.service("nftables").is_enabled
    with host.sudo():
        ruleset = host.check_output("nft list chain inet filter input")
    assert "policy drop" in ruleset


def admitted(address, sources):
    """Whether an address is among a link's sources (addresses or networks; none means from anywhere)."""
    return not sources or any(ipaddress.ip_address(address) in ipaddress.ip_network(s) for s in sources)


def test_tier_ports_open_only_to_the_tier_in_front(host, node, lab, facts):
    # Every port a link opens on another host, and whether some link lets this host in: from the model alone.
    expected = {}
    for other in lab.hosts:
        if other.name != node.name:
            for opening in lab.inbound(other, facts.control_address):
                key = (other.name, other.ip, opening.port)
                expected[key] = expected.get(key, False) or admitted(node.ip, opening.sources)
    targets = [[ip, port] for _, ip, port in expected]
    result = json.loads(host.check_output(f"python3 -c '{PROBE}' '{json.dumps(targets)}'"))
    for ((name, _, port), allowed), outcome in zip(expected.items(), result):
        if allowed:
            assert outcome in ("open", "closed"), f"{node.name} → {name}:{port} is {outcome}"
        else:
            assert outcome == "filtered", f"{node.name} → {name}:{port} is {outcome}"
