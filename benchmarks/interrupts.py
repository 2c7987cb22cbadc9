"""Benchmark of Ctrl-C anywhere: `lab up` interrupted at N points of its timeline, then whether the same command converges.

A first, uninterrupted `lab up` on a fresh lab gives the timeline (when each recipe's line was printed); then, for
each of N points spread over it, a fresh lab's `lab up` gets SIGINT (to its process group, as a terminal's Ctrl-C)
at that point (by default after the same output line, and as long after it, as in the full run: a busy machine
does not crowd every point into the first step), the next `lab up` is timed (converged the first time?), and `lab test` is run. Prints one JSON
document. Run as root:  .venv/bin/python benchmarks/interrupts.py [--points N] [--web N] [--name NAME]
Its lab has its own name and subnet (192.168.120-139.0/24), so a developer's lab is untouched. Each point reports
the seconds the next `lab up` took to converge, how many runs it needed, and whether `lab test` then passed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time

from lab.testing import ScratchLab, scratch_lab

NAME = os.environ.get("TEST_LAB_NAME", "labintrbench")
MAX_RERUNS = 3  # a point that needs more `lab up` runs than this to converge is reported as not converging


def run(lab: ScratchLab, *args: str, timeout: float = 1800) -> dict:
    """`lab ARGS` to its end: seconds, exit code, its summary line (the last of stdout) and its one-line error."""
    started = time.perf_counter()
    done = subprocess.run(lab.command(*args), cwd=lab.folder, env=lab.env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=timeout)
    lines = done.stdout.strip().splitlines()
    return {"seconds": round(time.perf_counter() - started, 1), "exit_code": done.returncode,
            "summary": lines[-1] if lines else "", "error": done.stderr.strip()[-300:]}


def timed_lines(lab: ScratchLab, args: tuple[str, ...], interrupt_at: float | None,
                after_line: int = 0) -> tuple[int, list[tuple[float, str]]]:
    """`lab ARGS` with each stdout line's second since start; SIGINT to its process group interrupt_at seconds
    after its after_line-th line (after its start when 0)."""
    process = subprocess.Popen(lab.command(*args), cwd=lab.folder, env=lab.env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                               start_new_session=True)
    started = time.perf_counter()
    lines: list[tuple[float, str]] = []

    reached = threading.Event()
    if not after_line:
        reached.set()

    def watch() -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            lines.append((round(time.perf_counter() - started, 1), line.rstrip()))
            if len(lines) == after_line:
                reached.set()
        reached.set()  # it ended before that line: nothing left to interrupt

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    try:
        if interrupt_at is not None:
            reached.wait(1800)
            try:
                process.wait(interrupt_at)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGINT)
        code = process.wait(1800)
    except BaseException:  # the benchmark itself stopped (Ctrl-C): stop its `lab up` too, before the lab is destroyed
        os.killpg(process.pid, signal.SIGINT)
        process.wait(60)
        raise
    reader.join(10)
    return code, lines


def where(lines: list[tuple[float, str]], at: float, timeline: list[tuple[float, str]]) -> dict:
    """What the interrupted run had printed last, and what the uninterrupted run printed next (what was under way)."""
    printed = [text for _, text in lines if text.strip()]
    upcoming = next((text for second, text in timeline if second > at and text.strip()), "(the end)")
    return {"last_line": printed[-1] if printed else "(nothing yet)", "next_line_of_full_run": upcoming}


def measure_points(lab: ScratchLab, up: tuple[str, ...], count: int, total: float,
                   timeline: list[tuple[float, str]], points: list[dict], spread: str = "lines") -> None:
    """For each point: a fresh lab's `lab up` interrupted there, the next `lab up` (and more if needed), `lab test`."""
    printed = [second for second, text in timeline]
    for index in range(count):
        at = round(total * (index + 0.5) / count, 1)
        # By lines (the default): the line of the full run printed last before that second, and as long after it
        # as there: the same point in the work whether this run is slower or faster than the full one.
        after_line = sum(1 for second in printed if second <= at) if spread == "lines" else 0
        delay = round(at - printed[after_line - 1], 1) if after_line else at
        code, lines = timed_lines(lab, up, delay, after_line)
        point = {"interrupt_at_s": at, "after_line": after_line, "then_s": delay,
                 "interrupted": code == 130, "exit_code": code, **where(lines, at, timeline)}
        reruns = []
        while len(reruns) < MAX_RERUNS:
            reruns.append(run(lab, *up))
            if reruns[-1]["exit_code"] == 0:
                break
        point["converged_first_time"] = reruns[0]["exit_code"] == 0
        point["runs_to_converge"] = len(reruns) if reruns[-1]["exit_code"] == 0 else None
        point["next_up"] = reruns[0]
        point["later_ups"] = reruns[1:]
        point["converge_s"] = round(sum(r["seconds"] for r in reruns), 1)
        point["test"] = run(lab, "test")
        point["green"] = point["test"]["exit_code"] == 0
        points.append(point)
        print(json.dumps(point), file=sys.stderr, flush=True)  # progress, one line per point
        run(lab, "destroy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10, help="interrupt points spread over the timeline")
    parser.add_argument("--web", type=int, default=3)
    parser.add_argument("--spread", choices=("lines", "seconds"), default="lines",
                        help="place points by the full run's output lines (load-independent) or by its seconds")
    parser.add_argument("--name", default=NAME, help="the scratch lab's name (default: $TEST_LAB_NAME or %(default)s)")
    options = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the local provider needs it")
    up = ("up", f"--web={options.web}")
    points = []
    with scratch_lab(options.name, range(120, 140)) as lab:
        code, timeline = timed_lines(lab, up, None)
        if code != 0:
            raise SystemExit(f"the uninterrupted lab up failed ({code}): {timeline[-1][1] if timeline else ''}")
        total = timeline[-1][0]
        run(lab, "destroy")
        # Evenly inside (0, total): the first just after the start, the last just before the end.
        try:
            measure_points(lab, up, options.points, total, timeline, points, options.spread)
        except KeyboardInterrupt:  # stopped early: the points measured so far are still reported
            print(f"benchmark: stopped after {len(points)} of {options.points} points", file=sys.stderr)
    report = {
        "benchmark": "lab up interrupted (SIGINT to its process group) at points of its timeline, then lab up again",
        "topology": f"lb1 + web1..{options.web} + db1, local provider",
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release()},
        "uninterrupted_up_s": total,
        "timeline": [{"at_s": second, "line": text} for second, text in timeline if text.strip()],
        "points_asked": options.points,
        "points": points,
        "converged_first_time": sum(p["converged_first_time"] for p in points),
        "tests_passed": sum(p["green"] for p in points),
        "per_point": [{"at_s": p["interrupt_at_s"], "converge_s": p["converge_s"], "runs": p["runs_to_converge"],
                       "green": p["green"]} for p in points],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
