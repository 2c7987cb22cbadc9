"""Benchmark of rolling deploys under load: `lab deploy` of a changed template and `lab rollback`, each while Locust's
site visitors go through lb1; seconds per command, requests served meanwhile, requests failed (must be 0).

A scratch lab (lb1 + web1..2 + db1) is brought up from a copy of the project; then RUNS times: a comment is appended
to the site's base template in the copy, `lab deploy` runs under load, then `lab rollback` under load. Prints one
JSON document. Run as root:
    .venv/bin/python benchmarks/deploy.py [--runs 3] [--users 10] [--name NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lab.testing import benchmark_main, copy_of_project, locust_while, scratch_lab

NAME = os.environ.get("TEST_LAB_NAME", "labdeploy")
THIRDS = range(150, 160)
AROUND_S = 5  # load flowing before each command starts and after it ends
LIMIT_S = 600  # Locust's own bound, should a command hang
TEMPLATE = Path("app/accounts/templates/accounts/base.html")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--users", type=int, default=10, help="Locust site visitors through lb1 (default %(default)s)")
    parser.add_argument("--name", default=NAME, help="the scratch lab's name (default: $TEST_LAB_NAME or %(default)s)")
    options = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the local provider needs it")
    commands: dict[str, list[dict]] = {"deploy": [], "rollback": []}
    with tempfile.TemporaryDirectory(prefix="labdeploy-") as scratch:
        project = copy_of_project(Path(scratch) / "project")
        with scratch_lab(options.name, THIRDS, extra_env={"PYTHONPATH": str(project)}, timeout=1800) as lab:
            lab.ok("up", "--web=2")
            for run in range(options.runs):
                with open(project / TEMPLATE, "a") as template:
                    template.write(f"<!-- deployed by benchmarks/deploy.py {time.time_ns()} -->\n")
                for verb in commands:
                    figures = locust_while(lab, Path(scratch) / f"{verb}-{run}", lambda verb=verb: lab.run(verb),
                                           options.users, AROUND_S, LIMIT_S)
                    result = figures.pop("result")
                    figures.update(exit=result.returncode, error=result.stderr.strip()[-300:] if result.returncode else "")
                    commands[verb].append(figures)
                    print(json.dumps({verb: figures}), file=sys.stderr, flush=True)  # progress
    report = {
        "benchmark": f"lab deploy (a changed template) and lab rollback, each under {options.users} Locust site "
                     f"visitors through lb1 over HTTPS, from {AROUND_S} s before to {AROUND_S} s after",
        "topology": "lb1 + web1..2 + db1, Gunicorn, local provider",
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release(),
                    "note": "a shared machine: timings are noisy, compare medians"},
        "runs": commands,
        "median": {verb: {"seconds": statistics.median(r["seconds"] for r in runs),
                          "requests": statistics.median(r["requests"] for r in runs)} for verb, runs in commands.items()},
        "failed_requests": {verb: sum(r["failures"] for r in runs) for verb, runs in commands.items()},
        "every_command_succeeded": all(r["exit"] == 0 for runs in commands.values() for r in runs),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    benchmark_main(main)
