"""The lab's verbs as a library: up, status, test, bench, ssh, destroy. The CLI is a thin layer over these."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

from lab import recipes as recipes_module
from lab import verify
from lab.bench import timestamped_results_dir
from lab.errors import BenchError, LabBusy, NotUp, ThresholdMissed, UsageError
from lab.matrix import Cell, CellReport, MatrixSettings, compare_cells, measure_cell
from lab.providers import get_provider
from lab.providers.base import HostFacts
from lab.recipes import ConvergeReport, RecipeResult
from lab.remote import RemoteHost, render_known_hosts, render_ssh_config
from lab.report_html import render as render_report
from lab.state import LabDir, write_private
from lab.system import ensure_debian_packages
from lab.topology import (APP_SERVERS, APPSERVER_THREADS, APPSERVER_WORKERS, DEFAULT_THREADS, AppServerSettings,
                          Overrides, Topology, load_file, resolve, with_web_count)

Say = Callable[[str], None]
CONFIG_FILE = "lab.toml"


@dataclass(frozen=True)
class Project:
    """A folder with (optionally) lab.toml, and the lab directory that belongs to it."""

    root: Path
    labdir: LabDir

    @classmethod
    def here(cls, root: Path | None = None, environ: dict[str, str] | None = None) -> "Project":
        environ = dict(os.environ) if environ is None else environ
        root = (root or Path.cwd()).resolve()
        labdir = Path(environ["LAB_DIR"]).resolve() if environ.get("LAB_DIR") else root / ".lab"
        return cls(root, LabDir(labdir))

    def topology(self, overrides: Overrides = Overrides()) -> Topology:
        return resolve(load_file(self.root / CONFIG_FILE), os.environ, overrides)


@dataclass(frozen=True)
class HostStatus:
    name: str
    tier: str
    ip: str
    state: str


def up(project: Project, overrides: Overrides, say: Say, on_result: Callable[[RecipeResult], None],
       max_step: int | None = None, topology: Topology | None = None) -> ConvergeReport:
    """Create or start every host, then converge every recipe up to max_step. Safe to repeat and to interrupt."""
    topology = topology or project.topology(overrides)
    labdir = project.labdir
    provider = get_provider(topology.provider)
    _same_lab(labdir, topology)
    provider.preflight(topology, labdir, say)  # before anything is written: refusals leave nothing behind
    with labdir.locked():
        state = _same_lab(labdir, topology)
        state = state or labdir.new_state(topology)
        state["topology"] = topology.to_dict()
        state["status"] = "creating"
        labdir.write(state)
        endpoints = provider.up(topology, labdir, state, say)
        write_private(labdir.known_hosts, render_known_hosts(endpoints))
        write_private(labdir.ssh_config, render_ssh_config(endpoints, labdir))
        state["status"] = "up"
        labdir.write(state)
        recipes = recipes_module.load_recipes(max_step)
        report = recipes_module.converge(
            topology, recipes, lambda name: RemoteHost(labdir, name), provider.facts(topology),
            labdir.secrets(), on_result,
        )
        recipes_module.raise_for_failures(report)
        return report


def _same_lab(labdir: LabDir, topology: Topology) -> dict | None:
    """The existing state, if it is the same lab (name and provider) as the one asked for."""
    state = labdir.read() if labdir.exists() else None
    if state and (state["provider"], state["name"]) != (topology.provider, topology.name):
        raise LabBusy(
            f"this folder's lab is {state['name']!r} on provider {state['provider']}; "
            f"`lab destroy` it before changing to {topology.name!r} on {topology.provider}"
        )
    return state


def _running_lab(project: Project) -> tuple[dict, Topology]:
    state = project.labdir.read()
    if state["status"] != "up":
        raise NotUp(f"the lab in {project.labdir.path} is {state['status']}, not up: run `lab up`")
    return state, Topology.from_dict(state["topology"])


def status(project: Project) -> list[HostStatus]:
    state = project.labdir.read()
    states = get_provider(state["provider"]).status(project.labdir, state)
    topology = Topology.from_dict(state["topology"])
    return [HostStatus(h.name, h.tier, h.ip, states.get(h.name, "unknown")) for h in topology.hosts]


def facts_of(state: dict, topology: Topology) -> HostFacts:
    return get_provider(state["provider"]).facts(topology)


def test(project: Project, tiers: Iterable[str] | None, junit_xml: Path | None, max_step: int | None = None) -> None:
    state, topology = _running_lab(project)
    not_running = [s.name for s in status(project) if s.state != "running"]
    if not_running:
        raise NotUp(f"hosts not running: {', '.join(not_running)}; run `lab up`")
    verify.run_checks(project.labdir, topology, facts_of(state, topology), tiers, junit_xml, max_step)


def ssh_command(project: Project, host: str, command: Iterable[str]) -> list[str]:
    """The ssh command line for `lab ssh`: the same ssh_config Fabric and testinfra use."""
    state, topology = _running_lab(project)
    topology.host(host)  # a clear error naming the lab's hosts
    return ["ssh", "-F", str(project.labdir.ssh_config), host, *command]


def close_ssh_masters(labdir: LabDir, hosts: Iterable[str]) -> None:
    """testinfra's OpenSSH control masters linger for a while; a destroyed lab must leave no process."""
    if not labdir.ssh_config.exists():
        return
    for name in hosts:
        subprocess.run(["ssh", "-F", str(labdir.ssh_config), "-O", "exit", name],
                       capture_output=True, stdin=subprocess.DEVNULL, timeout=10)


def destroy(project: Project, say: Say) -> bool:
    """Remove the lab using only what .lab/ records; returns False when there was nothing to destroy."""
    labdir = project.labdir
    if not labdir.exists():
        return False
    with labdir.locked():
        state = labdir.read()
        state["status"] = "destroying"
        labdir.write(state)
        close_ssh_masters(labdir, [h["name"] for h in state["topology"]["hosts"]])
        get_provider(state["provider"]).destroy(labdir, state, say)
    labdir.remove(keep_results=True)
    return True


SCENARIOS = {"mix": "locustfile.py", "hello": "hello.py"}
SCENARIO_PATHS = {"mix": "/", "hello": "/hello/"}  # what wrk measures as the reference for each scenario
LOADTESTS = recipes_module.PROJECT_ROOT / "loadtests"
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
        if server not in APP_SERVERS:
            raise UsageError(f"unknown server {server!r}; servers: {', '.join(APP_SERVERS)}")
    bounds = {"--users": (request.users, 1, MAX_USERS), "--duration": (request.duration_s, 1, MAX_DURATION_S),
              "--repeats": (request.repeats, 1, 10), "--warmup": (request.warmup_s, 0, 120), "--processes": (request.processes, 1, 4)}
    for flag, (value, low, high) in bounds.items():
        if not low <= value <= high:
            raise UsageError(f"{flag} must be from {low} to {high} (got {value})")
    for web in request.webs or ():
        with_web_count(resolve({}, {}), web)  # the same range check as `lab up --web`
    for flag, values, (low, high) in (("--workers", request.workers, APPSERVER_WORKERS), ("--threads", request.threads, APPSERVER_THREADS)):
        for value in values:
            if value is not None and not low <= value <= high:
                raise UsageError(f"{flag} must be from {low} to {high} (got {value})")


def bench(project: Project, request: BenchRequest, say: Say, on_result: Callable[[RecipeResult], None]) -> BenchRun:
    """Measure every cell (server × web count × knobs) through lb1: switch the lab, warm up, repeat, judge."""
    _check_bench_request(request)
    state, current = _running_lab(project)
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
        ensure_debian_packages({"wrk": "wrk"}, say)
    provider = get_provider(state["provider"])
    results_dir = timestamped_results_dir(project.labdir.path)
    reports = []
    for cell in cells:
        wanted = replace(
            with_web_count(current, cell.web), app_server=cell.server,
            appserver=AppServerSettings(workers=cell.workers or current.appserver.workers,
                                        threads=cell.threads or DEFAULT_THREADS[cell.server]),
        )
        if wanted != current:
            say(f"switching the lab to {cell.label}")
            up(project, Overrides(), say, on_result, topology=wanted)
            current = wanted
        target = f"http://{current.serving('http')[0].ip}"  # the first host serving the site (the balancer)
        resolved = replace(cell, workers=current.appserver.workers, threads=current.appserver.threads)
        reports.append(measure_cell(
            resolved, target, settings, results_dir / cell.label.replace(" ", "_").replace("×", "x"),
            lambda: provider.cpu_seconds(project.labdir, project.labdir.read()), say, os.cpu_count() or 1,
        ))
    machine = {"cores": os.cpu_count() or 1}
    (results_dir / "results.json").write_text(json.dumps(
        {"cells": [r.to_dict() for r in reports], "machine": machine, "request": asdict(request)}, indent=2, default=str))
    (results_dir / "report.html").write_text(render_report(reports, f"lab bench — {results_dir.name}", machine))
    if all(r.error for r in reports):
        raise BenchError(f"every cell failed; first: {reports[0].cell.label}: {reports[0].error} (report in {results_dir})")
    return BenchRun(reports, results_dir)


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
