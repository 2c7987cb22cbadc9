"""Benchmark of how `lab up` grows with the lab: warm `lab up` (caches full, no host yet) per web count and per preset,
the hosts' memory once up, and the cost of one more web host.

For each web count (default 1, 2, 4, 8): `lab destroy`, then a timed `lab up --web=N` (the rootfs and packages are
already cached: a warm up), the sum of the hosts' memory (their cgroups), then a timed `lab up --web=N+1` (one host
grown). For each preset likewise (`lab up --preset P` after a destroy). Prints one JSON document, with the machine's
load average before each timed step (the machine is shared: read the spread, not one figure). Run as root:
    .venv/bin/python benchmarks/up_scaling.py [--web 1,2,4,8] [--presets minimal,workshop,tuned,full]
    .venv/bin/python benchmarks/up_scaling.py --cold full   # a cold up instead: empty caches of its own, then a
                                                           # second up with no change (the caches of /var/cache/lab
                                                           # are not touched)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile

from lab_memory import host_memory  # benchmarks/ is this script's own folder, first on sys.path
from lab.testing import benchmark_main, scratch_lab

NAME = os.environ.get("TEST_LAB_NAME", "labscale")
THIRDS = range(100, 120)
MB = 1024 * 1024


def load_average() -> float:
    return os.getloadavg()[0]


def lab_memory_mb(lab_name: str, hosts: list[str]) -> dict[str, float]:
    usage = [host_memory(lab_name, host) for host in hosts]
    return {"usage": round(sum(u["usage"] for u in usage) / MB), "rss": round(sum(u["rss"] for u in usage) / MB)}


def cold_up(lab_name: str, preset: str) -> dict:
    """A cold `lab up --preset PRESET`: rootfs, packages and wheels fetched into empty caches of its own (LAB_CACHE_DIR),
    then the same command again, which should change nothing."""
    with tempfile.TemporaryDirectory(prefix="lab-cold-cache-") as caches:
        with scratch_lab(lab_name, THIRDS, extra_env={"LAB_CACHE_DIR": caches}, timeout=3600) as lab:
            load = load_average()
            seconds, _ = lab.timed("up", "--preset", preset)
            hosts = [h["name"] for h in json.loads(lab.ok("status", "--format", "json"))]
            memory = lab_memory_mb(lab_name, hosts)
            again_load = load_average()
            again_s, _ = lab.timed("up")
    return {"benchmark": "cold lab up (empty caches), then the same up again, local provider", "preset": preset,
            "hosts": len(hosts), "cold_up_s": round(seconds, 1), "load_before": round(load, 1),
            "memory_mb": memory, "second_up_s": round(again_s, 1), "second_load_before": round(again_load, 1),
            "machine": {"cores": os.cpu_count(), "kernel": platform.release(),
                        "note": "a shared machine: load_before is the 1-minute load average when each step began"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--web", default="1,2,4,8", help="web host counts (default %(default)s)")
    parser.add_argument("--presets", default="minimal,workshop,tuned,full", help="presets (default %(default)s)")
    parser.add_argument("--name", default=NAME, help="the scratch lab's name (default: $TEST_LAB_NAME or %(default)s)")
    parser.add_argument("--cold", metavar="PRESET", help="time one cold `lab up --preset PRESET` (empty caches)")
    options = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the local provider needs it")
    if options.cold:
        print(json.dumps(cold_up(options.name, options.cold), indent=2))
        return
    webs = [int(n) for n in options.web.split(",") if n]
    presets = [p for p in options.presets.split(",") if p]
    by_web: list[dict] = []
    by_preset: list[dict] = []
    with scratch_lab(options.name, THIRDS, timeout=3600) as lab:
        # Fills the caches (rootfs, wheels, and this lab's package proxy, which is kept per lab name) with what every
        # tier installs, so every timed run below is warm: a first `up --web=1` left the proxy without the packages of
        # the tiers the presets add, and their first up fetched them.
        lab.ok("up", "--preset", "full")
        for web in webs:
            lab.ok("destroy")
            load = load_average()
            seconds, _ = lab.timed("up", f"--web={web}")
            hosts = [h["name"] for h in json.loads(lab.ok("status", "--format", "json"))]
            memory = lab_memory_mb(options.name, hosts)
            grow_load = load_average()
            grown_s, _ = lab.timed("up", f"--web={web + 1}")
            figures = {"web": web, "hosts": len(hosts), "up_s": round(seconds, 1), "load_before": round(load, 1),
                       "memory_mb": memory, "grow_to": web + 1, "grow_s": round(grown_s, 1),
                       "grow_load_before": round(grow_load, 1)}
            by_web.append(figures)
            print(json.dumps(figures), file=sys.stderr, flush=True)  # progress
        for preset in presets:
            lab.ok("destroy")
            load = load_average()
            seconds, _ = lab.timed("up", "--preset", preset)
            hosts = [h["name"] for h in json.loads(lab.ok("status", "--format", "json"))]
            figures = {"preset": preset, "hosts": len(hosts), "up_s": round(seconds, 1), "load_before": round(load, 1),
                       "memory_mb": lab_memory_mb(options.name, hosts)}
            by_preset.append(figures)
            print(json.dumps(figures), file=sys.stderr, flush=True)
    first, last = (by_web[0], by_web[-1]) if by_web else ({"hosts": 0}, {"hosts": 0})  # `--web ""`: presets only
    extra_hosts = last["hosts"] - first["hosts"]
    report = {
        "benchmark": "warm lab up (caches full, no host yet) per web count and preset, local provider",
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release(),
                    "note": "a shared machine: load_before is the 1-minute load average when each step began"},
        "by_web": by_web,
        "by_preset": by_preset,
        # Hosts provision in parallel: one more web host should cost seconds, not another whole provisioning.
        "seconds_per_extra_web_host": round((last["up_s"] - first["up_s"]) / extra_hosts, 1) if extra_hosts else None,
        "median_grow_by_one_s": statistics.median(f["grow_s"] for f in by_web) if by_web else None,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    benchmark_main(main)
