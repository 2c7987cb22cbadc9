"""Benchmark of `lab up` of the same topology (lb1, web1, db1) on the vagrant provider and on the local one, in one run.

Prints one JSON document: per provider the seconds of `lab up` (split into making the hosts and provisioning them),
`lab test` and `lab destroy`, and the vagrant/local ratios. Run as root:  .venv/bin/python benchmarks/providers.py

Both labs start from warm machine caches (the local rootfs and the Vagrant box are made first, untimed, and reported
apart), so the ratio compares hosts and provisioning, not one-time downloads. Each lab has its own name, subnet and
folder; they run one after the other, never together, and each is destroyed before the next starts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time

from lab.testing import benchmark_main, scratch_lab

NAMES = {"local": "labpbl", "vagrant": "labpbv"}
THIRDS = {"local": range(100, 120), "vagrant": range(120, 150)}


def provisioning_seconds(output: str) -> float:
    """The converge time `lab up` prints last: "... recipes on 3 hosts: ...; N changes (12.3 s)"."""
    match = re.search(r"\(([\d.]+) s\)\s*$", output.strip())
    return float(match.group(1)) if match else float("nan")


def one_lab(provider: str, repeats: int) -> dict[str, object]:
    runs: dict[str, list[float]] = {"up": [], "make_hosts": [], "provision": [], "converged_up": [], "test": [], "destroy": []}
    with scratch_lab(NAMES[provider], THIRDS[provider], provider=provider, timeout=3600) as lab:
        for _ in range(repeats):
            seconds, output = lab.timed("up")
            runs["up"].append(seconds)
            runs["provision"].append(provisioning_seconds(output))
            runs["make_hosts"].append(seconds - runs["provision"][-1])
            runs["converged_up"].append(lab.timed("up")[0])
            runs["test"].append(lab.timed("test")[0])
            runs["destroy"].append(lab.timed("destroy")[0])
    return {
        "seconds": {k: [round(v, 1) for v in values] for k, values in runs.items()},
        "median_seconds": {k: round(statistics.median(values), 1) for k, values in runs.items()},
    }


def warm_caches() -> dict[str, float]:
    """Make the local rootfs and the Vagrant box before timing anything (a no-op when they exist)."""
    from lab.providers.local.rootfs import ensure_rootfs
    from lab.providers.vagrant import box, libvirt

    say = lambda message: print(f"  {message}", file=sys.stderr)  # noqa: E731
    started = time.perf_counter()
    ensure_rootfs(say)
    rootfs = time.perf_counter() - started
    started = time.perf_counter()
    libvirt.ensure_libvirt(say)
    box.ensure_box(say)
    return {"local_rootfs": round(rootfs, 1), "vagrant_box": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="up/test/destroy rounds per provider")
    options = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: both providers need it here")
    print("making the rootfs and the box first (untimed unless missing)", file=sys.stderr)
    caches = warm_caches()
    results = {}
    for provider in ("vagrant", "local"):
        print(f"timing lab up/test/destroy on {provider}", file=sys.stderr)
        results[provider] = one_lab(provider, options.repeats)
    med = {p: r["median_seconds"] for p, r in results.items()}  # type: ignore[misc]
    report = {
        "benchmark": "lab up of lb1 + web1 + db1: vagrant (libvirt) vs local (systemd-nspawn)",
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release(),
                    "libvirt_driver": _libvirt_driver()},
        "repeats": options.repeats,
        "cache_seconds": caches,
        **results,
        "ratios_vagrant_over_local": {
            key: round(med["vagrant"][key] / med["local"][key], 1)
            for key in ("up", "make_hosts", "provision", "converged_up", "test", "destroy") if med["local"][key] > 0
        },
    }
    print(json.dumps(report, indent=2))


def _libvirt_driver() -> str:
    try:
        from lab.machine.paths import cache_root

        return json.loads((cache_root() / "libvirt-driver.json").read_text()).get("driver", "unknown")
    except (OSError, ValueError):
        return "unknown"


if __name__ == "__main__":
    benchmark_main(main)
