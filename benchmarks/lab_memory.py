"""Memory of the whole lab per preset: each host's memory use (its cgroup, local provider), summed per preset.

Brings up its own lab with the `tuned` preset (own name, subnet and folder), runs `lab test` so every
service has served, then reads each host's memory cgroup (usage, page cache included, and RSS) a few times and
prints one JSON document: per host the median of the samples, and per preset the sum over the hosts that preset
has (minimal and workshop are subsets of tuned's hosts; the standby counted only where the preset has it). The
`full` preset's tiers (lb2, api, q, monitor, search, loadgen) add exporters to every host, which would count in the
smaller presets' sums: its memory comes from benchmarks/up_scaling.py instead.
Run as root:  .venv/bin/python benchmarks/lab_memory.py [--samples 5] [--keep]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from lab import stack as stacks
from lab.testing import benchmark_main, scratch_lab
from lab.topology import Overrides, resolve

NAME = "labmemory"
MEMORY_ROOTS = (Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup"))  # cgroup v1, then v2


def host_memory(lab_name: str, host: str) -> dict[str, int]:
    """A host's memory use in bytes: usage (page cache included) and RSS (anonymous memory), from its cgroup."""
    for root in MEMORY_ROOTS:
        folder = root / f"lab-{lab_name}" / host
        if (folder / "memory.usage_in_bytes").exists():  # v1
            stat = dict(line.split() for line in (folder / "memory.stat").read_text().splitlines())
            return {"usage": int((folder / "memory.usage_in_bytes").read_text()), "rss": int(stat["total_rss"])}
        if (folder / "memory.current").exists():  # v2
            stat = dict(line.split() for line in (folder / "memory.stat").read_text().splitlines())
            return {"usage": int((folder / "memory.current").read_text()), "rss": int(stat["anon"])}
    raise SystemExit(f"no memory cgroup for {host} of lab {lab_name} (local provider only)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--keep", action="store_true")
    options = parser.parse_args()
    with scratch_lab(NAME, range(150, 170), keep=options.keep, timeout=3600) as lab:
        lab.ok("up", "--preset", "tuned")
        lab.ok("test")
        hosts = [h["name"] for h in lab.state["topology"]["hosts"]]
        samples: dict[str, list[dict[str, int]]] = {h: [] for h in hosts}
        for _ in range(options.samples):
            for host in hosts:
                samples[host].append(host_memory(NAME, host))
            time.sleep(2)
        per_host = {h: {k: int(statistics.median(s[k] for s in samples[h])) // 2**20 for k in ("usage", "rss")}
                    for h in hosts}
        presets = {}
        for preset in ("minimal", "workshop", "tuned"):
            names = [h.name for h in resolve({}, {}, Overrides(preset=preset), platform="linux").hosts]
            presets[preset] = {"hosts": names, "usage_mb": sum(per_host[n]["usage"] for n in names),
                               "rss_mb": sum(per_host[n]["rss"] for n in names)}
        print(json.dumps({"samples": options.samples, "per_host_mb": per_host, "presets": presets,
                          "tiers_declared_mb": {t: s.memory_mb for t, s in stacks.current().tiers.items()}}, indent=2))


if __name__ == "__main__":
    benchmark_main(main)
