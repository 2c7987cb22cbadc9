"""Whether each host's main services (its tier spec's, in lab.stack) are up on a running lab, asked over its ssh_config."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

from lab.state import LabDir
from lab.topology import Topology
from lab.stack import APP_SERVER_UNIT
from provision.step3_appserver.recipes import SERVER_UNITS
from provision.step5_lbpair.recipes import KEEPALIVED_UNIT
from provision.step5_pooler.recipes import POOLED_TIERS

PROBE_TIMEOUT_S = 8.0  # per host, all hosts at once: `lab status` answers within this even when a host hangs
UP, DOWN, UNKNOWN = "up", "down", "unknown"


def services_of(topology: Topology, tier: str, host: str | None = None) -> tuple[str, ...]:
    """The units that tier runs in this lab, in display order (its pooler too, where the lab has one); with a host
    name, also those only the tier's first host runs when it is that host."""
    unit = SERVER_UNITS[topology.app_server]
    spec = topology.stack.tiers.get(tier)
    units = tuple(unit if name == APP_SERVER_UNIT else name for name in (spec.services if spec else ()))
    units += (KEEPALIVED_UNIT,) if tier in {h.tier for h in topology.balancer_pair} else ()  # a pair's, lb2 on
    if spec and host is not None and topology.tier(tier) and topology.tier(tier)[0].name == host:
        units += spec.first_host_services
    return units + (("pgbouncer",) if topology.db.pooler == "pgbouncer" and tier in POOLED_TIERS else ())


def probe_command(labdir: LabDir, host: str, units: Iterable[str]) -> list[str]:
    """One short ssh: `systemctl is-active` prints one word per unit, in order, and needs no root."""
    return ["ssh", "-F", str(labdir.ssh_config), "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", host,
            "systemctl", "is-active", *units]


def read_states(units: tuple[str, ...], output: str) -> dict[str, str]:
    """up/down per unit from `systemctl is-active`'s answer; unknown when it did not answer for each unit."""
    words = output.split()
    if len(words) != len(units):
        return {unit: UNKNOWN for unit in units}
    return {unit: UP if word == "active" else DOWN for unit, word in zip(units, words)}


def holders_command(labdir: LabDir, host: str, address: str) -> list[str]:
    """One short ssh: the line of `ip -o addr` naming the address, if the host holds it (no root needed)."""
    return ["ssh", "-F", str(labdir.ssh_config), "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", host,
            "ip", "-o", "-4", "addr", "show", "to", f"{address}/32"]


def floating_holders(labdir: LabDir, topology: Topology, hosts: Iterable[str]) -> dict[str, bool | None]:
    """For each named balancer of the pair: whether it holds the floating address now (None: it did not answer)."""
    pair = [h.name for h in topology.balancer_pair if h.name in set(hosts)]

    def ask(name: str) -> bool | None:
        try:
            done = subprocess.run(holders_command(labdir, name, str(topology.floating_ip)), capture_output=True,
                                  text=True, stdin=subprocess.DEVNULL, timeout=PROBE_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return bool(done.stdout.strip()) if done.returncode == 0 else None

    if not pair:
        return {}
    with ThreadPoolExecutor(max_workers=len(pair)) as pool:
        return dict(zip(pair, pool.map(ask, pair)))


def probe(labdir: LabDir, topology: Topology, hosts: Iterable[str]) -> dict[str, dict[str, str]]:
    """Each named host's main services, up/down (unknown when the host does not answer in time), asked in parallel."""
    wanted = {name: services_of(topology, topology.host(name).tier, name) for name in hosts}
    wanted = {name: units for name, units in wanted.items() if units}

    def ask(name: str) -> dict[str, str]:
        units = wanted[name]
        try:
            done = subprocess.run(probe_command(labdir, name, units), capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL, timeout=PROBE_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired):
            return {unit: UNKNOWN for unit in units}
        return read_states(units, done.stdout)

    if not wanted:
        return {}
    with ThreadPoolExecutor(max_workers=len(wanted)) as pool:
        return dict(zip(wanted, pool.map(ask, wanted)))
