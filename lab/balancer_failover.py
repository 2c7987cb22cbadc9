"""The balancer pair's failover under bounded load, measured on a scratch lab: nginx stopped on the balancer holding
the floating address, or that balancer's plug pulled; shared by benchmarks/lb_failover.py (the figures, as JSON)
and tests/test_integration_full.py (their bound), so the test checks what the benchmark measures."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Protocol

from lab import faults
from lab.faults import LOAD_PATH, run_load, summarize
from lab.lifecycle import Project
from lab.providers import get_provider
from lab.topology import Topology

FAULTS = ("nginx", "power")  # `systemctl stop nginx` on the holder; the holder's plug pulled (the provider's power_off)
HOLDER_POLL_S = 0.2


class Lab(faults.Lab, Protocol):
    """What this measurement needs of a lab: lab.faults' Lab, and its folder (the provider's power_off reads its state)."""

    folder: Path


def holders(lab: Lab) -> list[str]:
    """The balancers holding the floating address now, as `lab status` says."""
    return [row["name"] for row in json.loads(lab.ok("status", "--format", "json")) if row.get("holds")]


def holds_address(lab: Lab, peer: str, address: str) -> bool:
    """Asked with plain ssh on the lab's ssh_config: `lab ssh` would add a Python start (a second or more on a busy
    machine) to every poll."""
    answer = subprocess.run(["ssh", "-F", str(lab.folder / ".lab" / "ssh_config"), "-o", "BatchMode=yes", peer,
                             "ip", "-o", "-4", "addr", "show", "to", f"{address}/32"],
                            capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30)
    return answer.returncode == 0 and bool(answer.stdout.strip())


def failover_under_load(lab: Lab, fault: str, clients: int = 8, seconds: float = 20.0, fault_after: float = 5.0) -> dict:
    """`clients` threads request /health/ through the floating address for `seconds`; `fault_after` s in, the fault
    strikes the balancer holding it. The load's figures (lab.faults.summarize), which balancer held the address
    before and after; how long after the fault was done (its command returned: nginx stopped, the plug pulled; the
    command itself takes `restart_command_s`) the other one held it (asked over SSH every 0.2 s) and the site answered
    every request again (the last failed request's end; 0 when none failed or all failed before)."""
    if fault not in FAULTS:
        raise ValueError(f"fault must be one of {', '.join(FAULTS)}")
    topology = Topology.from_dict(lab.state["topology"])
    address = topology.floating_ip
    if address is None:
        raise ValueError("this lab has one balancer: no floating address to fail over")
    before = holders(lab)
    if len(before) != 1:
        raise AssertionError(f"{address} is held by {before or 'no balancer'} before the fault")
    holder = before[0]
    peer = next(h.name for h in topology.balancer_pair if h.name != holder)
    url = f"https://{address}{LOAD_PATH}"
    marks: dict[str, float] = {}

    def strike(load_started: float) -> None:
        time.sleep(fault_after)
        marks["began"] = time.monotonic() - load_started
        if fault == "nginx":
            lab.ok("ssh", holder, "systemctl", "stop", "nginx")
        else:
            project = Project.here(root=lab.folder, environ={})
            get_provider(lab.state["provider"]).power_off(project, holder)
        marks["ended"] = time.monotonic() - load_started
        while time.monotonic() - load_started < seconds:
            if holds_address(lab, peer, address):
                marks["peer_holds"] = time.monotonic() - load_started
                return
            time.sleep(HOLDER_POLL_S)

    samples = run_load(url, clients, seconds, during=strike, cafile=lab.ok("ca").strip())
    if "ended" not in marks:
        raise AssertionError("the fault did not strike before the load ended")
    figures = summarize(samples, marks["began"], marks["ended"])
    failed = [s for s in samples if not s.ok]
    return {"url": url, "fault": f"systemctl stop nginx on {holder}" if fault == "nginx" else f"{holder} powered off",
            "clients": clients, "load_s": seconds, "fault_began_at_s": round(marks["began"], 2),
            "held_before": holder, "held_after": peer if "peer_holds" in marks else None,
            "peer_holds_after_s": round(max(0.0, marks["peer_holds"] - marks["ended"]), 2) if "peer_holds" in marks else None,
            "answered_again_after_s": round(max(0.0, max(f.ended for f in failed) - marks["ended"]), 2) if failed else 0.0,
            **figures}


