"""Benchmark of hosts rebooted from inside (local provider): seconds until each is back, with no `lab up`.

A scratch lab (lb1 + web1 + db1) is brought up; then, RUNS times for each host, `systemctl reboot` runs inside it
(`lab ssh HOST systemctl reboot`, as a user would) and the time is taken until the host has booted again (sshd
answers, systemd says the boot finished) and until `lab status` shows its main services up. `lab test` runs once
at the end, without any `lab up` in between. Prints one JSON document. Run as root:
    .venv/bin/python benchmarks/reboot.py [--runs 3] [--hosts web1,db1,lb1] [--name NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys

from lab.faults import reboot_host
from lab.testing import benchmark_main, scratch_lab

NAME = os.environ.get("TEST_LAB_NAME", "labreboot")
THIRDS = range(140, 150)


def median(values: list[float | None]) -> float | None:
    """The median of the runs that came back; None when none did (a run's services never came up)."""
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 1) if known else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--hosts", default="web1,db1,lb1")
    parser.add_argument("--name", default=NAME, help="the scratch lab's name (default: $TEST_LAB_NAME or %(default)s)")
    options = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the local provider needs it")
    hosts = options.hosts.split(",")
    reboots: dict[str, list[dict]] = {host: [] for host in hosts}
    with scratch_lab(options.name, THIRDS) as lab:
        lab.ok("up", timeout=1800)
        for _ in range(options.runs):
            for host in hosts:
                reboots[host].append(reboot_host(lab, host))
                print(json.dumps(reboots[host][-1]), file=sys.stderr, flush=True)  # progress
        test = lab.run("test")
    report = {
        "benchmark": "systemctl reboot inside a host; seconds until it is back by itself (no lab up)",
        "topology": "lb1 + web1 + db1, local provider",
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release(),
                    "note": "a shared machine: timings are noisy, compare medians"},
        "reboots": reboots,
        "median": {host: {key: median([r[key] for r in runs]) for key in ("booted_s", "services_up_s")}
                   for host, runs in reboots.items()},
        "lab_test_after_without_up": "passed" if test.returncode == 0 else f"failed ({test.returncode}): {test.stderr.strip()[-200:]}",
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    benchmark_main(main)
