"""Benchmark of the lab's lifecycle on the local provider: cold and warm `lab up`, converged re-run, `lab test`, `lab destroy`.

Prints one JSON document: every timing, plus medians. Run as root:  .venv/bin/python benchmarks/lifecycle.py [--repeats N]
Its lab has its own name, subnet, folder and (for the cold run) cache folder, so a developer's lab is untouched.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
from pathlib import Path

from lab.testing import benchmark_main, scratch_lab

NAME = "labbench"


def changes_in(output: str) -> int:
    last = output.strip().splitlines()[-1]
    if "no changes" in last:
        return 0
    return int(last.split("; ")[-1].split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each warm measurement")
    parser.add_argument("--web", type=int, default=2)
    parser.add_argument("--keep-cold-cache", action="store_true", help="keep the cold run's cache folder afterwards")
    options = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the local provider needs it")

    cache = Path(tempfile.mkdtemp(prefix="lab-bench-cache-", dir="/var/tmp"))
    # An empty cache folder: the first up builds the rootfs and downloads every package.
    up = ("up", f"--web={options.web}")
    runs: dict[str, list[float]] = {"cold_up": [], "warm_up": [], "converged_up": [], "test": [], "destroy": []}
    converged_changes: list[int] = []
    try:
        with scratch_lab(NAME, range(150, 199), extra_env={"LAB_CACHE_DIR": str(cache)}, timeout=3600) as lab:
            runs["cold_up"].append(lab.timed(*up)[0])
            for _ in range(options.repeats):
                seconds, output = lab.timed(*up)
                runs["converged_up"].append(seconds)
                converged_changes.append(changes_in(output))
                runs["test"].append(lab.timed("test")[0])
                runs["destroy"].append(lab.timed("destroy")[0])
                runs["warm_up"].append(lab.timed(*up)[0])
    finally:
        if not options.keep_cold_cache:
            subprocess.run(["rm", "-rf", "--one-file-system", str(cache)])
    report = {
        "benchmark": "lab lifecycle, local provider",
        "topology": f"lb1 + web1..{options.web} + db1",
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release()},
        "repeats": options.repeats,
        "seconds": {k: [round(v, 2) for v in values] for k, values in runs.items()},
        "median_seconds": {k: round(statistics.median(values), 2) for k, values in runs.items() if values},
        "converged_up_changes": converged_changes,
        "targets": {"warm_up_s": 30, "converged_up_s": 5, "test_s": 15},
    }
    report["ratios"] = {
        "cold_over_warm_up": round(report["median_seconds"]["cold_up"] / report["median_seconds"]["warm_up"], 2),
        "warm_up_over_converged_up": round(report["median_seconds"]["warm_up"] / report["median_seconds"]["converged_up"], 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    benchmark_main(main)
