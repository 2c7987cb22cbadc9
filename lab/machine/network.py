"""The lab's network on this machine: a bridge, a blackhole route behind it, and one namespace per host."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from lab.errors import NetworkClash
from lab.machine.paths import short_id
from lab.system import run

NETNS_DIR = Path("/run/netns")


def routes() -> list[dict]:
    return json.loads(run(["ip", "-j", "route", "show", "table", "all"]).stdout or "[]")


def check_subnet_free(subnet: str, own_bridge: str) -> None:
    """Refuse a subnet that overlaps a route of the machine that is not this lab's own."""
    network = ipaddress.IPv4Network(subnet)
    for route in routes():
        dst = route.get("dst", "")
        if dst in ("", "default") or ":" in dst or route.get("table") == "local":
            continue
        try:
            other = ipaddress.IPv4Network(dst, strict=False)
        except ValueError:
            continue
        if not other.overlaps(network):
            continue
        ours = route.get("dev") == own_bridge or (route.get("type") == "blackhole" and str(other) == subnet)
        if not ours:
            where = f"dev {route['dev']}" if "dev" in route else route.get("type", "route")
            raise NetworkClash(
                f"subnet {subnet} overlaps the machine's route {dst} ({where}); "
                "choose another with LAB_SUBNET or [lab] subnet in lab.toml"
            )


def bridge_exists(bridge: str) -> bool:
    return Path("/sys/class/net", bridge).exists()


def ensure_blackhole(subnet: str) -> None:
    """A blackhole behind the lab's bridge route: with the bridge down, lab traffic goes nowhere, not out."""
    if not _has_blackhole(subnet):
        run(["ip", "route", "replace", "blackhole", subnet, "metric", "4000"])


def remove_blackhole(subnet: str) -> None:
    if _has_blackhole(subnet):
        run(["ip", "route", "del", "blackhole", subnet, "metric", "4000"], check=False)


def ensure_bridge(bridge: str, gateway: str, subnet: str) -> None:
    """The bridge with the machine's lab address, plus a blackhole so lab traffic never takes the default route."""
    prefix = ipaddress.IPv4Network(subnet).prefixlen
    ensure_blackhole(subnet)
    if not bridge_exists(bridge):
        run(["ip", "link", "add", bridge, "type", "bridge"])
    addresses = run(["ip", "-j", "addr", "show", "dev", bridge]).stdout
    if f'"{gateway}"' not in addresses:
        run(["ip", "addr", "add", f"{gateway}/{prefix}", "dev", bridge])
    run(["ip", "link", "set", bridge, "up"])


def _has_blackhole(subnet: str) -> bool:
    return any(r.get("type") == "blackhole" and r.get("dst") == subnet for r in routes())


def remove_bridge(bridge: str, subnet: str) -> None:
    if bridge_exists(bridge):
        run(["ip", "link", "del", bridge])
    remove_blackhole(subnet)


def netns_exists(netns: str) -> bool:
    return (NETNS_DIR / netns).exists()


def host_mac(ip: str) -> str:
    """The MAC address of the host at ip: locally administered, and the same each time the host is made.

    A host made again (a bench's step adding db2 or cache hosts, `lab up` after a shrink) with a new random MAC would
    meet its neighbours' cached one for its address: they send to the old MAC until their neighbour entry times out,
    and for seconds the new host looks unreachable (`lab test`'s firewall check said "no ARP answer")."""
    return "02:6c:" + ":".join(f"{int(octet):02x}" for octet in ip.split("."))


def ensure_host_link(netns: str, veth: str, bridge: str, ip: str, subnet: str) -> None:
    """A namespace whose eth0 has the host's address and only the lab subnet's route: no default route."""
    prefix = ipaddress.IPv4Network(subnet).prefixlen
    if not netns_exists(netns):
        run(["ip", "netns", "add", netns])
    if not Path("/sys/class/net", veth).exists():
        inside = run(["ip", "-n", netns, "-j", "link", "show"]).stdout
        if '"eth0"' in inside:
            run(["ip", "-n", netns, "link", "del", "eth0"])  # half-made by an interrupted run
        run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "address", host_mac(ip),
             "netns", netns])
    links = run(["ip", "-n", netns, "-j", "link", "show", "dev", "eth0"]).stdout
    if f'"{host_mac(ip)}"' not in links:  # made by a version of lab that let the kernel choose
        run(["ip", "-n", netns, "link", "set", "eth0", "down"])
        run(["ip", "-n", netns, "link", "set", "eth0", "address", host_mac(ip)])
    run(["ip", "link", "set", veth, "master", bridge, "up"])
    addresses = run(["ip", "-n", netns, "-j", "addr", "show", "dev", "eth0"]).stdout
    if f'"{ip}"' not in addresses:
        run(["ip", "-n", netns, "addr", "add", f"{ip}/{prefix}", "dev", "eth0"])
    run(["ip", "-n", netns, "link", "set", "lo", "up"])
    run(["ip", "-n", netns, "link", "set", "eth0", "up"])


def remove_host_link(netns: str, veth: str) -> None:
    if Path("/sys/class/net", veth).exists():
        run(["ip", "link", "del", veth], check=False)
    if netns_exists(netns):
        run(["ip", "netns", "del", netns])


def first_free_subnet(lab_name: str, thirds: range) -> str:
    """The first 192.168.X.0/24 (X in thirds) that no route of the machine uses, but for lab_name's own."""
    for third in thirds:
        subnet = f"192.168.{third}.0/24"
        try:
            check_subnet_free(subnet, f"lab{short_id(lab_name)}")
        except NetworkClash:
            continue
        return subnet
    raise NetworkClash(f"no free subnet among 192.168.{thirds.start}-{thirds.stop - 1}.0/24 for lab {lab_name!r}")
