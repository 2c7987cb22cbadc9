"""Benchmark of the balancer pair's failover under load: failed requests and seconds until the other balancer answers.

A scratch lab (lb1 + lb2 + web1 + db1, local provider; keepalived holding the floating address on one balancer) is
brought up; then, RUNS times, CLIENTS threads request /health/ through the floating address back to back for
SECONDS, and FAULT_AFTER seconds in nginx is stopped on the balancer holding it (`systemctl stop nginx`); `lab up`
starts it again between runs (with nopreempt the address stays where it moved). Then, once (or --power-runs times),
the holder's plug is pulled (the provider's power_off, as `lab demo crash`) under the same load, and `lab up` boots
it again. Then --locust-runs times, nginx is stopped on the holder under Locust's users instead (the site's
pages, not only /health/). Each run reports requests, failed ones (by status), when the other balancer held the address and when the
site answered every request again; the summary gives medians. `lab test` runs at the end. Bounded: CLIENTS x
SECONDS, to the lab's own hosts only. Prints one JSON document. Run as root:
    .venv/bin/python benchmarks/lb_failover.py [--runs 3] [--power-runs 1] [--clients 8] [--seconds 20]
                                               [--locust-runs 1] [--users 10] [--name NAME]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from lab.balancer_failover import HOLDER_POLL_S, failover_under_load, holders, holds_address
from lab.testing import ScratchLab, benchmark_main, locust_while, scratch_lab
from lab.topology import Topology

NAME = os.environ.get("TEST_LAB_NAME", "lablbfailover")
THIRDS = range(241, 245)
MEDIANS = ("requests", "failed", "failed_percent", "failure_window_s", "peer_holds_after_s", "answered_again_after_s")


def medians(runs: list[dict]) -> dict:
    return {key: round(statistics.median(r[key] for r in runs if r[key] is not None), 2)
            if any(r[key] is not None for r in runs) else None for key in MEDIANS}


def failover_under_locust(lab: ScratchLab, results: Path, users: int, around_s: float) -> dict:
    """nginx stopped on the balancer holding the floating address while Locust's SiteVisitor users browse the site
    through it (pages, database views, static files; the rollout tests' users), from around_s before to around_s
    after: Locust's successful and failed requests, when the peer held the address, and from when to when requests
    failed (its failures report's first and last time seen, to the second)."""
    topology = Topology.from_dict(lab.state["topology"])
    holder = holders(lab)[0]
    peer = next(h.name for h in topology.balancer_pair if h.name != holder)
    marks: dict[str, float] = {}

    def strike() -> None:
        lab.ok("ssh", holder, "systemctl", "stop", "nginx")
        marks["stopped"] = time.time()
        while time.time() - marks["stopped"] < around_s and not holds_address(lab, peer, topology.floating_ip):
            time.sleep(HOLDER_POLL_S)
        marks["peer_holds"] = time.time()

    figures = locust_while(lab, results, strike, users, around_s, limit_s=int(4 * around_s) + 120)  # Locust wants whole seconds
    # Locust's failures report: each error's first and last time seen, to the second
    rows = list(csv.DictReader(io.StringIO(figures["failure_report"])))
    seen = [datetime.fromisoformat(row[key].replace("Z", "+00:00")).timestamp() for row in rows
            for key in ("First Seen", "Last Seen") if row.get(key)]
    failing = [min(seen), max(seen)] if seen else []
    total = figures["requests"]
    return {"fault": f"systemctl stop nginx on {holder}", "users": users, "load_s": round(figures["seconds"] + 2 * around_s, 1),
            "requests": total, "failed": figures["failures"],
            "failed_percent": round(100 * figures["failures"] / total, 2) if total else None,
            "held_after": peer if holds_address(lab, peer, topology.floating_ip) else None,
            "peer_holds_after_s": round(marks["peer_holds"] - marks["stopped"], 2),
            # whole seconds: the failures began and ended within these, counted from nginx's stop
            "failures_from_to_s": [round(failing[0] - marks["stopped"]), round(failing[-1] + 1 - marks["stopped"])]
            if failing else None,
            "failure_report": figures["failure_report"].splitlines()[1:6]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="nginx stopped on the holder, this many times")
    parser.add_argument("--power-runs", type=int, default=1, help="the holder's plug pulled, this many times")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0, help="load per run (bounded)")
    parser.add_argument("--fault-after", type=float, default=5.0, help="seconds of load before the fault")
    parser.add_argument("--locust-runs", type=int, default=1,
                        help="nginx stopped on the holder under Locust's users, this many times (default %(default)s)")
    parser.add_argument("--users", type=int, default=10, help="Locust's users in those runs (default %(default)s)")
    parser.add_argument("--name", default=NAME, help="the scratch lab's name (default: $TEST_LAB_NAME or %(default)s)")
    options = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the local provider needs it")
    if not (1 <= options.clients <= 64 and 1 <= options.seconds <= 300 and options.fault_after < options.seconds):
        raise SystemExit("load is bounded: 1-64 clients, 1-300 seconds, the fault within them")
    if not 1 <= options.users <= 64:
        raise SystemExit("load is bounded: 1-64 Locust users")
    runs: dict[str, list[dict]] = {"nginx": [], "power": []}
    locust_runs: list[dict] = []
    with scratch_lab(options.name, THIRDS) as lab:
        lab.ok("up", "--lb=2", timeout=1800)
        for fault, count in (("nginx", options.runs), ("power", options.power_runs)):
            for _ in range(count):
                figures = failover_under_load(lab, fault, options.clients, options.seconds, options.fault_after)
                runs[fault].append(figures)
                print(json.dumps({"run": len(runs[fault]), **figures}), file=sys.stderr, flush=True)  # progress
                lab.ok("up", timeout=1800)  # nginx started again / the host booted again
        for _ in range(options.locust_runs):
            with tempfile.TemporaryDirectory(prefix="lb-failover-locust-") as folder:
                figures = failover_under_locust(lab, Path(folder) / "locust", options.users, options.fault_after)
            locust_runs.append(figures)
            print(json.dumps({"locust_run": len(locust_runs), **figures}), file=sys.stderr, flush=True)
            lab.ok("up", timeout=1800)
        test = lab.run("test")
    report = {
        "benchmark": "the balancer holding the floating address fails while clients request /health/ through it",
        "topology": "lb1 + lb2 (keepalived, unicast VRRP) + web1 + db1, local provider",
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release(),
                    "load_average_at_end": os.getloadavg(), "note": "a shared machine: timings are noisy, compare medians"},
        "clients": options.clients, "load_s": options.seconds, "fault_after_s": options.fault_after,
        "runs": runs,
        "median": {fault: medians(figures) for fault, figures in runs.items() if figures},
        "locust": {"users": options.users, "around_s": options.fault_after, "runs": locust_runs,
                   "note": "Locust's SiteVisitor users (think time 0.1-0.5 s) through the floating address; it waits "
                           "for an answer as long as the balancer does (60 s)"},
        "lab_test_after": "passed" if test.returncode == 0 else f"failed ({test.returncode}): {test.stderr.strip()[-200:]}",
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    benchmark_main(main)
