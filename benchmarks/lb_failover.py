"""Benchmark of the balancer pair's failover under load: failed requests and seconds until the other balancer answers.

A scratch lab (lb1 + lb2 + web1 + db1, local provider; keepalived holding the floating address on one balancer) is
brought up; then, RUNS times, CLIENTS threads request /health/ through the floating address back to back for
SECONDS, and FAULT_AFTER seconds in nginx is stopped on the balancer holding it (`systemctl stop nginx`); `lab up`
starts it again between runs (with nopreempt the address stays where it moved). Then, once (or --power-runs times),
the holder's plug is pulled (the provider's power_off, as `lab demo crash`) under the same load, and `lab up` boots
it again. Each run reports requests, failed ones (by status), when the other balancer held the address and when the
site answered every request again; the summary gives medians. `lab test` runs at the end. Bounded: CLIENTS x
SECONDS, to the lab's own hosts only. Prints one JSON document. Run as root:
    .venv/bin/python benchmarks/lb_failover.py [--runs 3] [--power-runs 1] [--clients 8] [--seconds 20] [--name NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys

from lab.balancer_failover import failover_under_load
from lab.testing import benchmark_main, scratch_lab

NAME = os.environ.get("TEST_LAB_NAME", "lablbfailover")
THIRDS = range(241, 245)
MEDIANS = ("requests", "failed", "failed_percent", "failure_window_s", "peer_holds_after_s", "answered_again_after_s")


def medians(runs: list[dict]) -> dict:
    return {key: round(statistics.median(r[key] for r in runs if r[key] is not None), 2)
            if any(r[key] is not None for r in runs) else None for key in MEDIANS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="nginx stopped on the holder, this many times")
    parser.add_argument("--power-runs", type=int, default=1, help="the holder's plug pulled, this many times")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0, help="load per run (bounded)")
    parser.add_argument("--fault-after", type=float, default=5.0, help="seconds of load before the fault")
    parser.add_argument("--name", default=NAME, help="the scratch lab's name (default: $TEST_LAB_NAME or %(default)s)")
    options = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the local provider needs it")
    if not (1 <= options.clients <= 64 and 1 <= options.seconds <= 300 and options.fault_after < options.seconds):
        raise SystemExit("load is bounded: 1-64 clients, 1-300 seconds, the fault within them")
    runs: dict[str, list[dict]] = {"nginx": [], "power": []}
    with scratch_lab(options.name, THIRDS) as lab:
        lab.ok("up", "--lb=2", timeout=1800)
        for fault, count in (("nginx", options.runs), ("power", options.power_runs)):
            for _ in range(count):
                figures = failover_under_load(lab, fault, options.clients, options.seconds, options.fault_after)
                runs[fault].append(figures)
                print(json.dumps({"run": len(runs[fault]), **figures}), file=sys.stderr, flush=True)  # progress
                lab.ok("up", timeout=1800)  # nginx started again / the host booted again
        test = lab.run("test")
    report = {
        "benchmark": "the balancer holding the floating address fails while clients request /health/ through it",
        "topology": "lb1 + lb2 (keepalived, unicast VRRP) + web1 + db1, local provider",
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release(),
                    "load_average_at_end": os.getloadavg(), "note": "a shared machine: timings are noisy, compare medians"},
        "clients": options.clients, "load_s": options.seconds, "fault_after_s": options.fault_after,
        "runs": runs,
        "median": {fault: medians(figures) for fault, figures in runs.items() if figures},
        "lab_test_after": "passed" if test.returncode == 0 else f"failed ({test.returncode}): {test.stderr.strip()[-200:]}",
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    benchmark_main(main)
