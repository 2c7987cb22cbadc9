"""Benchmark of the app-server choice: Gunicorn vs Apache + mod_wsgi through nginx, with wrk as the reference ceiling.

Brings up its own lab (own name, subnet and folder; a developer's lab is untouched), then runs `lab bench` on the
trivial endpoint and on the realistic mix, each over both servers, and prints one JSON document: per scenario and
server the median requests/s with spread, p95, the bottleneck, wrk's rate at the same target and Locust/wrk, and
the ratio between the servers. nginx serving a static file alone is measured with wrk as well, for the seed's caveat.
Run as root:  .venv/bin/python benchmarks/appservers.py [--web 2] [--duration 15] [--repeats 3] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
from pathlib import Path

from lab.bench.wrk import run_wrk
from lab.testing import benchmark_main, scratch_lab

NAME = "labshootout"
STATIC_FILE = "/static/accounts/site.css"


def summary(results: Path) -> dict:
    data = json.loads((results / "results.json").read_text())
    cells = {}
    for cell in data["cells"]:
        cells[cell["cell"]["server"]] = {
            "label": cell["label"],
            "error": cell["error"],
            "did_not_settle": cell["not_settled"],
            "rps_median": round(cell["median"].get("rps", 0), 1),  # successful requests/s, steady window
            "rps_spread": [round(v, 1) for v in cell["spread"].get("rps", [])],
            "p95_ms_median": cell["median"].get("p95_ms"),
            "failure_pct_median": cell["median"].get("failure_pct"),
            "locust_cores_median": round(cell["median"].get("generator_cores", 0), 2),
            "bottleneck": cell["bottleneck"],
            "rps_runs": [round(r["rps"], 1) for r in cell["runs"] if r["settled"]],
            "stale_reads": cell["stale"],
            "requests_per_web_host": cell["hosts"],
            "idle_web_hosts": cell["idle_hosts"],
            "wrk_rps": cell["wrk_rps"],
            "wrk_errors": cell["wrk_errors"],
            "locust_over_wrk": round(cell["locust_over_wrk"], 2) if cell["locust_over_wrk"] else None,
        }
    if {"gunicorn", "mod_wsgi"} <= cells.keys() and cells["gunicorn"]["rps_median"]:
        cells["mod_wsgi_over_gunicorn_rps"] = round(cells["mod_wsgi"]["rps_median"] / cells["gunicorn"]["rps_median"], 2)
    cells["report"] = str(results / "report.html")
    cells["cpu_split"] = data.get("cpu_split")
    cells["money"] = data.get("money")
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--web", type=int, default=2)
    parser.add_argument("--duration", type=int, default=15, help="seconds per measured run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    options = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the local provider needs it")

    report: dict = {
        "benchmark": "app servers through nginx: Gunicorn vs Apache + mod_wsgi",
        "topology": f"lb1 + web1..{options.web} + db1",
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release()},
        "settings": {"users": options.users, "duration_s": options.duration, "repeats": options.repeats},
        "scenarios": {},
    }
    with scratch_lab(NAME, range(120, 150), keep=options.keep, timeout=3600) as lab:
        lab.ok("up", f"--web={options.web}")
        for scenario in ("hello", "mix"):
            output = lab.ok("bench", f"--web={options.web}", "--server=gunicorn,mod_wsgi", "--scenario", scenario,
                                "--reference-wrk", "--users", str(options.users), "--duration", str(options.duration),
                                "--repeats", str(options.repeats))
            found = re.search(r"report: (\S+)/report\.html", output)
            if not found:
                raise SystemExit(f"lab bench printed no report path:\n{output[-2000:]}")
            report["scenarios"][scenario] = summary(Path(found.group(1)))
        lb = next(h for h in json.loads(lab.ok("status", "--format", "json")) if h["tier"] == "lb")
        static = run_wrk(f"https://{lb['ip']}{STATIC_FILE}", options.users, options.duration)  # http:// only redirects
        static_rps = static.rps
        hello = report["scenarios"]["hello"]
        report["nginx_static_file_wrk_rps"] = static_rps
        report["nginx_static_file_wrk_errors"] = static.describe_errors()
        report["static_over_hello_wrk"] = {
            server: round(static_rps / hello[server]["wrk_rps"], 1) for server in ("gunicorn", "mod_wsgi")
            if hello.get(server, {}).get("wrk_rps")
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    benchmark_main(main)
