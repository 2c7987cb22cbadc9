"""`lab bench`, the verb: measure the site through its balancer, one configuration or a matrix of them.

The lab is switched to each configuration in turn (with `lab up`'s own code) and put back as it was found, even
after an error or Ctrl-C. Locust runs in a child process (lab.bench.locust): it monkey-patches threads, which
Fabric relies on.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

from lab import lifecycle
from lab.bench.html import render as render_report
from lab.bench.locust import timestamped_results_dir
from lab.bench.matrix import Cell, CellReport, MatrixSettings, compare_cells, measure_cell
from lab.errors import BenchError, ThresholdMissed, TopologyError, UsageError, one_line
from lab.files import write_atomically
from lab.lifecycle import Project
from lab.machine_packages import ensure_feature
from lab.providers import get_provider
from lab.recipes import PROJECT_ROOT, RecipeResult
from lab.system import Say
from lab.topology import (APP_SERVERS, APPSERVER_THREADS, APPSERVER_WORKERS, DEFAULT_THREADS, AppServerSettings,
                          Overrides, Topology, resolve, with_web_count)

SCENARIOS = {"mix": "locustfile.py", "hello": "hello.py"}
SCENARIO_PATHS = {"mix": "/", "hello": "/hello/"}  # what wrk measures as the reference for each scenario
LOADTESTS = PROJECT_ROOT / "loadtests"
MAX_USERS = 500  # load stays bounded: this machine is shared, and the lab's hosts live on it too
MAX_DURATION_S = 900
MAX_TOTAL_S = 3600


@dataclass(frozen=True)
class BenchRequest:
    """What `lab bench` was asked to measure; None means "as the lab is now"."""

    servers: tuple[str, ...] | None = None
    webs: tuple[int, ...] | None = None
    workers: tuple[int | None, ...] = (None,)
    threads: tuple[int | None, ...] = (None,)
    users: int = 32
    spawn_rate: float | None = None  # None: all users at once, so ramp-up is short
    duration_s: int = 20
    warmup_s: int = 5
    repeats: int = 3
    processes: int = 1
    scenario: str = "mix"
    reference_wrk: bool = False


@dataclass(frozen=True)
class BenchRun:
    cells: list[CellReport]
    results_dir: Path


def _check_bench_request(request: BenchRequest) -> None:
    if request.scenario not in SCENARIOS:
        raise UsageError(f"unknown scenario {request.scenario!r}; scenarios: {', '.join(SCENARIOS)}")
    for server in request.servers or ():
        if server not in APP_SERVERS:  # the same exit code (3) as `lab up --app-server` and lab.toml's app_server
            raise TopologyError(f"--server must be one of {', '.join(APP_SERVERS)} (got {server!r})")
    bounds = {"--users": (request.users, 1, MAX_USERS), "--duration": (request.duration_s, 1, MAX_DURATION_S),
              "--repeats": (request.repeats, 1, 10), "--warmup": (request.warmup_s, 0, 120), "--processes": (request.processes, 1, 4)}
    for flag, (value, low, high) in bounds.items():
        if not low <= value <= high:
            raise UsageError(f"{flag} must be from {low} to {high} (got {value})")
    for web in request.webs or ():
        with_web_count(resolve({}, {}), web)  # the same range check as `lab up --web`
    for flag, values, (low, high) in (("--workers", request.workers, APPSERVER_WORKERS), ("--threads", request.threads, APPSERVER_THREADS)):
        for value in values:
            if value is not None and not low <= value <= high:  # topology values, as lab.toml's [appserver] ones
                raise TopologyError(f"{flag} must be from {low} to {high} (got {value})")


def bench(project: Project, request: BenchRequest, say: Say, on_result: Callable[[RecipeResult], None]) -> BenchRun:
    """Measure every cell (server × web count × knobs) through lb1: switch the lab, warm up, repeat, judge."""
    _check_bench_request(request)
    state, current = lifecycle.running_lab(project)
    servers = request.servers or (current.app_server,)
    webs = request.webs or (current.count("web"),)
    cells = [Cell(s, w, k, t) for s in servers for w in webs for k in request.workers for t in request.threads]
    planned = len(cells) * (request.warmup_s + request.repeats * (request.duration_s + 8))
    if planned > MAX_TOTAL_S:
        raise UsageError(f"this matrix would run for about {planned // 60} min; keep it under {MAX_TOTAL_S // 60} min")
    settings = MatrixSettings(
        users=request.users, spawn_rate=request.spawn_rate or float(request.users), duration_s=request.duration_s,
        warmup_s=request.warmup_s, repeats=request.repeats, locustfile=LOADTESTS / SCENARIOS[request.scenario],
        processes=request.processes,
        # No think time: users send requests back to back, so the servers (not the users) set the pace.
        extra_env={"LAB_DEMO_PASSWORD": project.labdir.secrets()["demo_password"], "LAB_WAIT": "0"},
        wrk_path=SCENARIO_PATHS[request.scenario] if request.reference_wrk else None,
    )
    if request.reference_wrk:
        ensure_feature("bench-wrk", say)
    provider = get_provider(state["provider"])
    results_dir = timestamped_results_dir(project.labdir.path)
    reports = []
    found, switched = current, False
    try:
        for cell in cells:
            wanted = replace(
                with_web_count(current, cell.web), app_server=cell.server,
                appserver=AppServerSettings(workers=cell.workers or current.appserver.workers,
                                            threads=cell.threads or DEFAULT_THREADS[cell.server]),
            )
            if wanted != current:
                say(f"switching the lab to {cell.label}")
                switched = True
                lifecycle.up(project, Overrides(), say, on_result, topology=wanted)
                current = wanted
            resolved = replace(cell, workers=current.appserver.workers, threads=current.appserver.threads)
            reports.append(measure_cell(
                resolved, lifecycle.site_url(current), settings, results_dir / cell.label.replace(" ", "_").replace("×", "x"),
                lambda: provider.cpu_seconds(project.labdir, project.labdir.read()), say, os.cpu_count() or 1,
            ))
    except BaseException:  # a failed switch, or Ctrl-C mid-matrix: put the lab back as far as possible, then stop
        if switched:
            _put_back(project, found, say, on_result, after_error=True)
        raise
    if switched:
        _put_back(project, found, say, on_result)
    machine = {"cores": os.cpu_count() or 1}
    # Whole or not at all: `lab bench --compare` reads it back.
    write_atomically(results_dir / "results.json", json.dumps(
        {"cells": [r.to_dict() for r in reports], "machine": machine, "request": asdict(request)}, indent=2, default=str),
        mode=0o644)
    (results_dir / "report.html").write_text(render_report(reports, f"lab bench — {results_dir.name}", machine))
    if all(r.error for r in reports):
        raise BenchError(f"every cell failed; first: {reports[0].cell.label}: {reports[0].error} (report in {results_dir})")
    return BenchRun(reports, results_dir)


def topology_label(topology: Topology) -> str:
    """gunicorn web×2 workers=2 threads=1: the lab's app server setup as `lab bench` names its configurations."""
    return Cell(topology.app_server, topology.count("web"), topology.appserver.workers, topology.appserver.threads).label


def _put_back(project: Project, found: Topology, say: Say, on_result: Callable[[RecipeResult], None],
              after_error: bool = False) -> None:
    """Return the lab to the configuration `lab bench` found it in (server, web count, workers, threads)."""
    label = topology_label(found)
    say(f"putting the lab back as it was: {label}" + (" (Ctrl-C again leaves it as it is)" if after_error else ""))
    try:
        lifecycle.up(project, Overrides(), say, on_result, topology=found)
    except (Exception, KeyboardInterrupt) as error:
        if not after_error:
            raise
        # The error that stopped the bench is the one to report; this one only says what is left to do.
        why = "interrupted" if isinstance(error, KeyboardInterrupt) else one_line(error)
        say(f"could not put the lab back ({why}); `lab up` returns it to lab.toml and your remembered flags")
        return
    say(f"the lab is back as it was: {label}")


def compare(project: Project, first: str, second: str) -> list[dict]:
    """Deltas between two earlier bench runs (folder names under .lab/results, or paths)."""
    def cells_of(run: str) -> list[dict]:
        folder = Path(run) if "/" in run else project.labdir.results / run
        try:
            return json.loads((folder / "results.json").read_text())["cells"]
        except (OSError, ValueError, KeyError):
            raise UsageError(f"no bench results in {folder}") from None

    return compare_cells(cells_of(first), cells_of(second))


def check_thresholds(cells: list[CellReport], fail_under_rps: float | None, max_p95_ms: float | None) -> None:
    """For CI: a distinct exit code when a measured configuration misses the bar."""
    misses = []
    for cell in cells:
        if not cell.runs:
            misses.append(f"{cell.cell.label} was not measured ({cell.error})")
            continue
        if fail_under_rps is not None and cell.median("rps") < fail_under_rps:
            misses.append(f"{cell.cell.label} served {cell.median('rps'):.0f} req/s < {fail_under_rps:g}")
        if max_p95_ms is not None and cell.median("p95_ms") > max_p95_ms:
            misses.append(f"{cell.cell.label} p95 {cell.median('p95_ms'):.0f} ms > {max_p95_ms:g}")
    if misses and (fail_under_rps is not None or max_p95_ms is not None):
        raise ThresholdMissed(f"{len(misses)} threshold(s) missed; first: {misses[0]}")
