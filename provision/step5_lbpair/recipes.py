"""Step 5 recipes: keepalived on both balancers of a pair, the site's floating address held by one of them (VRRP
unicast between their private addresses) and moved to the other when its nginx stops or it goes away."""

from __future__ import annotations

import ipaddress
import re
import time

from lab.recipes import RecipeError, Target, recipe
from lab.topology import Host, Topology

KEEPALIVED_UNIT = "keepalived"
KEEPALIVED_CONF = "/etc/keepalived/keepalived.conf"
# keepalived's own default name for the user its scripts run as: the nginx check needs no privilege.
SCRIPT_USER = "keepalived_script"
# Whether nginx runs, as systemd sees it: a stopped, failed or killed nginx is not "active".
NGINX_CHECK = "/usr/bin/systemctl is-active --quiet nginx"
CHECK_INTERVAL_S = 1
CHECK_FALL = 2  # two failed checks in a row (2 s): the holder gives the address up
CHECK_RISE = 2
# VRRP's own pace: an advert a second; a backup that hears none for 3 adverts and a skew takes the address over
# (about 3.6 s when the holder is gone without a word; at once when the holder says it is giving up).
ADVERT_INTERVAL_S = 1
# One VRRP router per lab's bridge (unicast, so another lab's never hears it): any id from 1 to 255 does.
VIRTUAL_ROUTER_ID = 10
# The first balancer is preferred when both start together; with nopreempt, a later start changes nothing.
PRIORITIES = (150, 100)
INTERFACE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
# How long `lab up` waits for the pair to agree on a holder: an election takes about 3 adverts after a start.
ELECTION_WAIT_S = 30


def peer_of(topology: Topology, host: Host) -> Host:
    """The other balancer of the pair."""
    return next(h for h in topology.balancer_pair if h.name != host.name)


def priority_of(topology: Topology, host: Host) -> int:
    return PRIORITIES[[h.name for h in topology.balancer_pair].index(host.name)]


def interface_of(t: Target) -> str:
    """The network interface holding the host's private address (eth0 in a local host, a VM's own NIC name)."""
    found = t.run("ip -o -4 addr show to %s", f"{t.host.ip}/32").stdout.split()
    if len(found) < 2 or not INTERFACE_NAME.fullmatch(found[1]):
        raise RecipeError(f"no network interface of {t.host.name} holds its address {t.host.ip}: `ip -4 addr`")
    return found[1]


def keepalived_values(t: Target, interface: str) -> dict[str, object]:
    """What keepalived.conf.j2 prints besides the host: the pair, the floating address and the constants above."""
    network = ipaddress.ip_network(t.topology.subnet)
    return {"floating_ip": t.topology.floating_ip, "prefix_length": network.prefixlen, "interface": interface,
            "peer_ip": peer_of(t.topology, t.host).ip, "priority": priority_of(t.topology, t.host),
            "router_id": VIRTUAL_ROUTER_ID, "advert_interval_s": ADVERT_INTERVAL_S, "script_user": SCRIPT_USER,
            "nginx_check": NGINX_CHECK, "check_interval_s": CHECK_INTERVAL_S, "check_fall": CHECK_FALL,
            "check_rise": CHECK_RISE}


@recipe(tiers=("lb",), after=("step5_balancer.nginx",))
def keepalived(t: Target) -> None:
    """With two balancers, keepalived on each (after nginx answers on the floating address there); with one, none:
    a keepalived left from a pair is stopped and disabled (it gives the address up), its configuration removed."""
    if t.host not in t.topology.balancer_pair:
        if t.test("test -e %s", KEEPALIVED_CONF):
            t.run("systemctl disable --now --quiet %s", KEEPALIVED_UNIT)  # it gives the address up as it stops
            t.absent(KEEPALIVED_CONF)
            t.changed(f"stopped {KEEPALIVED_UNIT}: this lab has one balancer, so no floating address")
        return
    t.packages("keepalived")
    if not t.test("id -u %s", SCRIPT_USER):
        t.run("useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin %s", SCRIPT_USER)
        t.changed(f"created system user {SCRIPT_USER}")
    with t.owed("keepalived-restart") as earlier_change:
        changed = t.template(KEEPALIVED_CONF, "step5_lbpair/templates/keepalived.conf.j2", 0o644,
                             **keepalived_values(t, interface_of(t)))
        # No `keepalived --config-test` first: Debian 12's 2.2.7 ends it with SIGTERM whatever the file says (exit 143).
        t.service(KEEPALIVED_UNIT, restart=changed or earlier_change)


def holders(t: Target) -> list[str]:
    """The balancers of the pair holding the floating address now (one when all is well)."""
    return [h.name for h in t.topology.balancer_pair
            if t.on(h.name).run("ip -o -4 addr show to %s", f"{t.topology.floating_ip}/32").stdout.strip()]


@recipe(tiers=("lb",), first_only=True, after=("step5_lbpair.keepalived",))
def floating_address(t: Target) -> None:
    """`lab up` ends once exactly one balancer holds the floating address, so the site answers on it (and `lab test`
    right after finds it held); changes nothing."""
    if not t.topology.balancer_pair:
        return
    deadline = time.monotonic() + ELECTION_WAIT_S
    while len(found := holders(t)) != 1:
        if time.monotonic() > deadline:
            raise RecipeError(f"{t.topology.floating_ip} is held by {' and '.join(found) or 'no balancer'} "
                              f"{ELECTION_WAIT_S} s after keepalived started: `lab ssh {t.host.name} journalctl -u "
                              f"{KEEPALIVED_UNIT}`")
        time.sleep(0.5)
