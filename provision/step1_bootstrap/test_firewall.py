"""Step 1 firewall checks: default-drop input, and each tier's port reachable only from the tier in front of it."""

import json

TIERS = ("lb", "web", "db")
PORTS = {"lb": 80, "web": 8000, "db": 5432}
ALLOWED_FROM = {"lb": {"lb", "web", "db"}, "web": {"lb"}, "db": {"web"}}

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


def test_tier_ports_open_only_to_the_tier_in_front(host, node, lab):
    others = [o for o in lab.hosts if o.name != node.name]
    targets = [[o.ip, PORTS[o.tier]] for o in others]
    result = json.loads(host.check_output(f"python3 -c '{PROBE}' '{json.dumps(targets)}'"))
    for other, outcome in zip(others, result):
        if node.tier in ALLOWED_FROM[other.tier]:
            assert outcome in ("open", "closed"), f"{node.name} → {other.name}:{PORTS[other.tier]} is {outcome}"
        else:
            assert outcome == "filtered", f"{node.name} → {other.name}:{PORTS[other.tier]} is {outcome}"
