"""Benchmark of a database restart under load: failed requests and their time window, through the balancer.

A scratch lab (lb1 + web1..N + db1, local provider) is brought up; then, RUNS times, CLIENTS threads request
/health/ (one database query each) through lb1 back to back for SECONDS, and `systemctl restart` of PostgreSQL on
db1 starts RESTART_AFTER seconds in. Each run reports requests, failed ones (by status), the window from the first
failed request's start to the last one's end, and the restart command's own time; the summary gives medians.
Bounded: CLIENTS x SECONDS, to the lab's own hosts only. Prints one JSON document. Run as root:
    .venv/bin/python benchmarks/db_restart.py [--runs 3] [--clients 8] [--seconds 20] [--web 1] [--name NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys

from lab.faults import database_restart_under_load
from lab.testing import benchmark_main, scratch_lab

NAME = os.environ.get("TEST_LAB_NAME", "labdbrestart")
THIRDS = range(140, 150)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0, help="load per run (bounded)")
    parser.add_argument("--restart-after", type=float, default=5.0, help="seconds of load before the restart")
    parser.add_argument("--web", type=int, default=1)
    parser.add_argument("--app-server", default="gunicorn", choices=("gunicorn", "mod_wsgi"))
    parser.add_argument("--name", default=NAME, help="the scratch lab's name (default: $TEST_LAB_NAME or %(default)s)")
    options = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the local provider needs it")
    if not (1 <= options.clients <= 64 and 1 <= options.seconds <= 300):
        raise SystemExit("load is bounded: 1-64 clients, 1-300 seconds")
    runs = []
    with scratch_lab(options.name, THIRDS) as lab:
        lab.ok("up", f"--web={options.web}", f"--app-server={options.app_server}", timeout=1800)
        for index in range(options.runs):
            figures = database_restart_under_load(lab, options.clients, options.seconds, options.restart_after)
            runs.append(figures)
            print(json.dumps({"run": index + 1, **figures}), file=sys.stderr, flush=True)  # progress
        test = lab.run("test")

    def median(key: str) -> float:
        return round(statistics.median(r[key] for r in runs), 2)

    report = {
        "benchmark": "PostgreSQL restarted on db1 while clients request /health/ through lb1",
        "topology": f"lb1 + web1..{options.web} ({options.app_server}) + db1, local provider",
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release(),
                    "note": "a shared machine: timings are noisy, compare medians"},
        "clients": options.clients, "load_s": options.seconds, "restart_after_s": options.restart_after,
        "runs": runs,
        "median": {key: median(key) for key in ("requests", "failed", "failed_percent", "failure_window_s",
                                                 "restart_command_s")},
        "lab_test_after": "passed" if test.returncode == 0 else f"failed ({test.returncode})",
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    benchmark_main(main)
