"""Benchmark of the load generator's cores: Locust/wrk on the hello scenario with the generator on its own CPUs
(the lab's hosts pinned to the others) and with every CPU shared, interleaved pair by pair in one run.

Each pair is one Locust run and one wrk run against the balancer's /hello/, in alternating order (drift hits both);
rounds alternate split and shared. Locust's rate is successful requests/s over its steady window (after --warmup,
from its per-second history); wrk's is its Requests/sec minus non-2xx responses. Prints one JSON document: per
mode the Locust/wrk ratio of every pair, the median and spread, and the CPU each side used.
Uses a lab that is already up (--lab-folder, lb1 + web×2 + db1 is the issue's) or brings up its own (destroyed after).
Run as root:  .venv/bin/python benchmarks/generator_cpus.py [--lab-folder DIR] [--pairs 3] [--duration 15]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from lab.lifecycle import Project, running_lab, site_url
from lab.machine.cpus import generator_prefix, hosts_pinned, plan_split
from lab.providers import get_provider
from lab.testing import benchmark_main, scratch_lab

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = ROOT / "loadtests" / "hello.py"
LOCUST = Path(sys.executable).parent / "locust"
NAME = os.environ.get("BENCH_LAB_NAME", "labgencpus")  # its own lab name (and subnet): other labs untouched


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def locust_rps(url: str, users: int, warmup: int, duration: int, prefix: list[str]) -> float:
    """Successful requests/s over the steady window: the per-second history from warmup to the end."""
    with tempfile.TemporaryDirectory(prefix="gencpus-") as folder:
        command = [*prefix, str(LOCUST), "-f", str(LOCUSTFILE), "--headless", "-u", str(users), "-r", str(users),
                   "-t", f"{warmup + duration}s", "--host", url, "--csv", f"{folder}/run", "--csv-full-history",
                   "--only-summary", "--stop-timeout", "2", "--loglevel", "WARNING"]
        subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=warmup + duration + 60,
                       stdin=subprocess.DEVNULL)
        rows = [r for r in csv.DictReader(open(f"{folder}/run_stats_history.csv")) if r["Name"] == "Aggregated"]
    start = int(rows[0]["Timestamp"])
    steady = [r for r in rows if int(r["Timestamp"]) >= start + warmup]
    if len(steady) < 2:
        raise SystemExit("Locust's history has no steady window: is the lab answering?")
    first, last = steady[0], steady[-1]
    ok = lambda r: int(r["Total Request Count"]) - int(r["Total Failure Count"])  # noqa: E731
    return (ok(last) - ok(first)) / (int(last["Timestamp"]) - int(first["Timestamp"]))


def wrk_rps(url: str, users: int, duration: int, prefix: list[str]) -> float:
    """wrk's requests/s less its non-2xx responses (an error is no throughput)."""
    result = subprocess.run([*prefix, "wrk", "-t1", f"-c{users}", f"-d{duration}s", url], capture_output=True,
                            text=True, timeout=duration + 30, stdin=subprocess.DEVNULL)
    rate = float(re.search(r"Requests/sec:\s+([0-9.]+)", result.stdout).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", result.stdout)
    total = re.search(r"(\d+) requests in ([0-9.]+)s", result.stdout)
    if non_2xx and total:
        rate -= int(non_2xx.group(1)) / float(total.group(2))
    return rate


def measure(project: Project, options: argparse.Namespace) -> dict:
    state, topology = running_lab(project)
    provider = get_provider(state["provider"])
    site = site_url(topology)  # Locust's --host; its scenario adds /hello/, wrk is given the page itself
    split = plan_split(options.generator_cpus, shared=False)
    if split is None:
        raise SystemExit("this machine has fewer than 2 CPUs: there is nothing to split")
    modes = {"split": split, "shared": None}
    pairs: dict[str, list[dict]] = {mode: [] for mode in modes}
    for round_number in range(options.pairs):
        for mode, chosen in modes.items():
            prefix = generator_prefix(chosen)
            with ExitStack() as stack:
                stack.enter_context(hosts_pinned(provider, project, chosen))
                hosts_before, generator_before, wall_before = (
                    sum(provider.host_cpu_seconds(project).values()), children_cpu(), time.monotonic())
                runs = {}
                order = ("locust", "wrk") if round_number % 2 == 0 else ("wrk", "locust")
                for tool in order:
                    if tool == "locust":
                        runs["locust"] = locust_rps(site, options.users, options.warmup, options.duration, prefix)
                    else:
                        runs["wrk"] = wrk_rps(site + "/hello/", options.users, options.duration, prefix)
                wall = time.monotonic() - wall_before
                pair = {
                    "order": "/".join(order),
                    "locust_rps": round(runs["locust"], 1),
                    "wrk_rps": round(runs["wrk"], 1),
                    "locust_over_wrk": round(runs["locust"] / runs["wrk"], 3) if runs["wrk"] else None,
                    "hosts_cores": round((sum(provider.host_cpu_seconds(project).values()) - hosts_before) / wall, 2),
                    "generator_cores": round((children_cpu() - generator_before) / wall, 2),
                }
            pairs[mode].append(pair)
            print(f"round {round_number + 1} {mode}: {pair}", file=sys.stderr, flush=True)
    summary = {}
    for mode, found in pairs.items():
        ratios = [p["locust_over_wrk"] for p in found if p["locust_over_wrk"] is not None]
        summary[mode] = {
            "cpus": split.describe() if modes[mode] else "shared: hosts and generator on every CPU",
            "locust_over_wrk_median": round(statistics.median(ratios), 3),
            "locust_over_wrk_spread": [min(ratios), max(ratios)],
            "locust_rps_median": round(statistics.median(p["locust_rps"] for p in found), 1),
            "wrk_rps_median": round(statistics.median(p["wrk_rps"] for p in found), 1),
            "pairs": found,
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab-folder", type=Path, help="a folder whose lab is up (else a lab of its own is made)")
    parser.add_argument("--pairs", type=int, default=3, help="Locust+wrk pairs per mode (at least 3)")
    parser.add_argument("--duration", type=int, default=15, help="measured seconds per run")
    parser.add_argument("--warmup", type=int, default=5, help="Locust's seconds before its window opens")
    parser.add_argument("--users", type=int, default=32, help="Locust users and wrk connections")
    parser.add_argument("--generator-cpus", help="the generator's cpulist (default: lab.machine.cpus's choice)")
    options = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the local provider needs it")
    report: dict = {
        "benchmark": "Locust/wrk on hello with the load generator on its own CPUs vs shared CPUs",
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release()},
        "settings": {"pairs": options.pairs, "duration_s": options.duration, "warmup_s": options.warmup,
                     "users": options.users},
    }
    if options.lab_folder:
        project = Project.here(options.lab_folder.resolve(), environ={})
        report["topology"] = " + ".join(h.name for h in running_lab(project)[1].hosts)
        report["modes"] = measure(project, options)
    else:
        with scratch_lab(NAME, range(150, 180), timeout=3600) as lab:
            lab.ok("up", "--web=2")
            project = Project.here(lab.folder, environ={})
            report["topology"] = " + ".join(h.name for h in running_lab(project)[1].hosts)
            report["modes"] = measure(project, options)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    benchmark_main(main)
