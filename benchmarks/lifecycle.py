"""Benchmark of the lab's lifecycle on the local provider: cold and warm `lab up`, converged re-run, `lab test`, `lab destroy`.

Prints one JSON document: every timing, plus medians. Run as root:  .venv/bin/python benchmarks/lifecycle.py [--repeats N]
Its lab has its own name, subnet, folder and (for the cold run) cache folder, so a developer's lab is untouched.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lab.providers.local import network

NAME = "labbench"


def free_subnet() -> str:
    return network.first_free_subnet(NAME, range(150, 199))


def timed(folder: Path, env: dict[str, str], *args: str) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "lab", *args], cwd=folder, env=env, capture_output=True, text=True,
                            stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"lab {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return seconds, result.stdout


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

    folder = Path(tempfile.mkdtemp(prefix="lab-bench-"))
    cache = Path(tempfile.mkdtemp(prefix="lab-bench-cache-", dir="/var/tmp"))
    (folder / "lab.toml").write_text(f'[lab]\nname = "{NAME}"\nsubnet = "{free_subnet()}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAB_")}
    env["LAB_CACHE_DIR"] = str(cache)  # empty: the first up builds the rootfs and downloads every package
    up = ("up", f"--web={options.web}")
    runs: dict[str, list[float]] = {"cold_up": [], "warm_up": [], "converged_up": [], "test": [], "destroy": []}
    converged_changes: list[int] = []
    try:
        runs["cold_up"].append(timed(folder, env, *up)[0])
        for _ in range(options.repeats):
            seconds, output = timed(folder, env, *up)
            runs["converged_up"].append(seconds)
            converged_changes.append(changes_in(output))
            runs["test"].append(timed(folder, env, "test")[0])
            runs["destroy"].append(timed(folder, env, "destroy")[0])
            runs["warm_up"].append(timed(folder, env, *up)[0])
    finally:
        subprocess.run([sys.executable, "-m", "lab", "destroy"], cwd=folder, env=env, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
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
    main()
