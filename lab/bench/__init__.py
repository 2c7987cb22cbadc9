"""`lab bench`, the verb: measure the site through its balancer, one configuration or a matrix of them.

The lab is switched to each configuration in turn (with `lab up`'s own code, under the lab's lock held for the whole
bench) and put back as it was found, even after an error or Ctrl-C; every finished cell is written at once.
Locust runs in a child process (lab.bench.locust): it monkey-patches threads, which Fabric relies on.
"""

from __future__ import annotations

import json
import os
import ssl
import time
import urllib.request
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

from lab import lifecycle
from lab.bench import money
from lab.bench.distributed import remote_workers
from lab.bench.html import render as render_report
from lab.bench.locust import timestamped_results_dir
from lab.bench.matrix import Cell, CellReport, MatrixSettings, compare_cells, measure_cell, tls_cost
from lab.bench.monitor import host_graphs
from lab.bench.tuning import ladder
from lab.errors import BenchError, ThresholdMissed, TopologyError, UsageError, one_line
from lab.files import write_atomically
from lab.lifecycle import CONFIG_FILE, Project
from lab.machine.cpus import generator_prefix, hosts_pinned, plan_split
from lab.machine_packages import ensure_feature
from lab.providers import get_provider
from lab.recipes import PROJECT_ROOT, RecipeResult
from lab.system import Say
from lab.topology import (APP_SERVERS, APPSERVER_THREADS, APPSERVER_WORKERS, DEFAULT_THREADS,
                          AppServerSettings, Host, Overrides, Topology, load_file, resolve, with_web_count)

SCENARIOS = {"mix": "locustfile.py", "hello": "hello.py", "api": "api.py"}
# What wrk measures as the reference for each scenario; none for the API's: its every request needs a token of its
# own customer (wrk would measure the balancer's 401s and 429s).
SCENARIO_PATHS = {"mix": "/", "hello": "/hello/"}
API_SCENARIO = "api"  # the JSON API (docs/api.md): one token per user, and the api hosts' share of the requests
API_TOKEN_NAME = "lab-bench"  # the tokens a bench makes (each replaces the one the bench before made)
SCHEMES = ("http", "https")
# The site is HTTPS only. "http" is the balancer's machine-only plain port (lifecycle.bench_plain_url), for
# measuring the cost of TLS on anonymous pages: Secure cookies never travel over it, so the mix cannot run there.
DEFAULT_SCHEME = "https"
SCENARIOS_WITHOUT_LOGIN = ("hello",)
LOADTESTS = PROJECT_ROOT / "loadtests"
MAX_USERS = 500  # load stays bounded: this machine is shared, and the lab's hosts live on it too
MAX_DURATION_S = 900
MAX_TOTAL_S = 3600
DRAIN_LIMIT_S = 120  # after a cell, how long the site may take to answer /health/ again (queued logins finishing)
MASTER_PORT = 5557  # Locust's own default: remote workers on loadgen hosts reach the master here


@dataclass(frozen=True)
class BenchRequest:
    """What `lab bench` was asked to measure; None means "as the lab is now"."""

    servers: tuple[str, ...] | None = None
    webs: tuple[int, ...] | None = None
    workers: tuple[int | None, ...] = (None,)
    threads: tuple[int | None, ...] = (None,)
    tune: tuple[str, ...] | None = None  # steps of the tuning ladder (lab.bench.tuning), cumulative
    schemes: tuple[str, ...] | None = None
    users: int = 32
    spawn_rate: float | None = None  # None: all users at once, so ramp-up is short
    duration_s: int = 20
    warmup_s: int = 5
    repeats: int = 3
    processes: int = 1
    scenario: str = "mix"
    reference_wrk: bool = False
    max_failed_pct: float | None = None
    shared_cpus: bool = False  # keep the load generator on the same CPUs as the lab's hosts


@dataclass(frozen=True)
class BenchRun:
    cells: list[CellReport]
    results_dir: Path
    money: str  # "money conserved" or the difference


def _check_bench_request(request: BenchRequest) -> None:
    if request.scenario not in SCENARIOS:
        raise UsageError(f"unknown scenario {request.scenario!r}; scenarios: {', '.join(SCENARIOS)}")
    for server in request.servers or ():
        if server not in APP_SERVERS:  # the same exit code (3) as `lab up --app-server` and lab.toml's app_server
            raise TopologyError(f"--server must be one of {', '.join(APP_SERVERS)} (got {server!r})")
    for scheme in request.schemes or ():
        if scheme not in SCHEMES:
            raise UsageError(f"--scheme takes http, https or both as http,https (got {scheme!r})")
    if "http" in (request.schemes or ()) and request.scenario not in SCENARIOS_WITHOUT_LOGIN:
        raise UsageError(f"--scheme http cannot run the {request.scenario} scenario: its logins need Secure cookies (and "
                         f"the API's bearer tokens TLS), which never travel over plain HTTP; measure the cost of TLS "
                         f"with --scenario hello")
    if request.reference_wrk and request.scenario not in SCENARIO_PATHS:
        raise UsageError(f"--reference-wrk has no page to measure for the {request.scenario} scenario: its requests "
                         f"need a customer's token each")
    bounds = {"--users": (request.users, 1, MAX_USERS), "--duration": (request.duration_s, 1, MAX_DURATION_S),
              "--repeats": (request.repeats, 1, 10), "--warmup": (request.warmup_s, 0, 120), "--processes": (request.processes, 1, 4)}
    for flag, (value, low, high) in bounds.items():
        if not low <= value <= high:
            raise UsageError(f"{flag} must be from {low} to {high} (got {value})")
    if request.spawn_rate is not None and not request.spawn_rate > 0:
        raise UsageError(f"--spawn-rate must be above 0 users per second (got {request.spawn_rate:g})")
    if request.max_failed_pct is not None and not 0 <= request.max_failed_pct <= 100:
        raise UsageError(f"--max-failed-pct must be from 0 to 100 (got {request.max_failed_pct:g})")
    for web in request.webs or ():
        with_web_count(resolve({}, {}), web)  # the same range check as `lab up --web`
    for flag, values, (low, high) in (("--workers", request.workers, APPSERVER_WORKERS), ("--threads", request.threads, APPSERVER_THREADS)):
        for value in values:
            if value is not None and not low <= value <= high:  # topology values, as lab.toml's [appserver] ones
                raise TopologyError(f"{flag} must be from {low} to {high} (got {value})")
    if request.tune:
        ladder(request.tune, Overrides())  # unknown or out-of-order steps refused before anything runs


def _site_url(topology: Topology, scheme: str) -> str:
    """The site's URL in that scheme: https is the site; http the balancer's plain bench port (port 80 only redirects)."""
    return lifecycle.bench_plain_url(topology) if scheme == "http" else lifecycle.site_url(topology, scheme)


def _scheme_env(project: Project, scheme: str) -> dict[str, str]:
    """Locust verifies https against the lab's own CA (wrk does not verify)."""
    return {"LAB_CA_FILE": str(lifecycle.ca_file(project))} if scheme == "https" else {}


def _wait_until_answering(project: Project, topology: Topology, say: Say) -> None:
    """After a cell, let the servers finish the requests still queued (a login costs a password hash) before the
    lab is switched or put back: a switch checks every web host's /health/ and would find it too busy."""
    url = lifecycle.site_url(topology, "https") + "/health/"  # port 80 redirects everything, /health/ included
    tls_context = ssl.create_default_context(cafile=str(lifecycle.ca_file(project)))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),  # lab traffic never goes through a proxy
                                         urllib.request.HTTPSHandler(context=tls_context))
    deadline = time.monotonic() + DRAIN_LIMIT_S
    while time.monotonic() < deadline:
        try:
            with opener.open(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (OSError, ValueError):
            pass
        time.sleep(2)
    say(f"the site did not answer {url} within {DRAIN_LIMIT_S} s after the load stopped")


def _generator_cpus_setting(project: Project) -> str | None:
    """lab.toml [bench] generator_cpus: the cpulist Locust and wrk run on (the hosts get the others)."""
    return load_file(project.root / CONFIG_FILE).get("bench", {}).get("generator_cpus")


def _cpu_count(cpulist: str) -> int:
    """How many CPUs a cpulist like "0", "1-3" or "0,2" names."""
    total = 0
    for part in cpulist.split(","):
        low, _, high = part.partition("-")
        total += int(high or low) - int(low) + 1
    return total


def _wanted(project: Project, state: dict, current: Topology, cell: Cell, step_overrides: Overrides | None) -> Topology:
    """The topology a cell runs on: the tuning step's (if any), with the cell's server, web count and knobs on top."""
    base = current if step_overrides is None else lifecycle.plan_up(project, step_overrides, state).topology
    return replace(
        with_web_count(base, cell.web), app_server=cell.server,
        appserver=AppServerSettings(workers=cell.workers or base.appserver.workers,
                                    threads=cell.threads or DEFAULT_THREADS[cell.server]),
    )


def _write_results(results_dir: Path, reports: list[CellReport], context: dict, incomplete: str | None) -> None:
    """results.json and report.html as they stand: written after every cell, so nothing measured is lost."""
    context = dict(context, complete=incomplete is None, incomplete=incomplete)
    cells = [r.to_dict() for r in reports]
    # Whole or not at all: `lab bench --compare` reads it back.
    write_atomically(results_dir / "results.json", json.dumps(
        {"cells": cells, "tls_cost": tls_cost(cells), **context}, indent=2, default=str), mode=0o644)
    write_atomically(results_dir / "report.html", render_report(reports, f"lab bench — {results_dir.name}", context),
                     mode=0o644)


def bench(project: Project, request: BenchRequest, say: Say, on_result: Callable[[RecipeResult], None]) -> BenchRun:
    """Measure every cell (server × web count × knobs × tuning step × scheme) through lb1, holding the lab's lock."""
    _check_bench_request(request)
    with project.labdir.locked(nested_allowed=True):  # switching the lab runs `lab up`'s code, which locks too
        return _bench_locked(project, request, say, on_result)


def _bench_locked(project: Project, request: BenchRequest, say: Say, on_result: Callable[[RecipeResult], None]) -> BenchRun:
    state, current = lifecycle.running_lab(project)
    servers = request.servers or (current.app_server,)
    webs = request.webs or (current.count("web"),)
    steps: list[tuple[str | None, Overrides | None]] = list(ladder(request.tune, Overrides())) if request.tune else [(None, None)]
    cells = [(Cell(s, w, k, t, step, scheme), overrides)
             for step, overrides in steps for s in servers for w in webs for k in request.workers
             for t in request.threads for scheme in (request.schemes or (DEFAULT_SCHEME,))]
    wrk_s = request.duration_s + 3 if request.reference_wrk else 0
    planned = len(cells) * (request.warmup_s + request.repeats * (request.duration_s + wrk_s) + 8)
    if planned > MAX_TOTAL_S:
        raise UsageError(f"this matrix would run for about {planned // 60} min; keep it under {MAX_TOTAL_S // 60} min")
    if request.reference_wrk:
        ensure_feature("bench-wrk", say)
    cores = os.cpu_count() or 1
    split = plan_split(_generator_cpus_setting(project), request.shared_cpus, cores)
    cpu_split = split.describe() if split else f"shared: the lab's hosts and the load generator on all {cores} CPUs"
    loadgen = current.count("loadgen")
    if loadgen:  # the users run on lab hosts, so on the hosts' CPUs: the split no longer keeps them apart
        workers = ", ".join(h.name for h in current.hosts if h.tier == "loadgen")
        cpu_split += f"; Locust's users run on {workers} (lab hosts, on the hosts' CPUs), its master here"
    say(f"CPUs: {cpu_split}")
    scenario_env = {
        "LAB_DEMO_PASSWORD": project.labdir.secrets()["demo_password"],
        # No think time: users send requests back to back, so the servers (not the users) set the pace.
        "LAB_WAIT": "0",
        # Each signed-in user is its own customer (customer0001 ...) with its own accounts; LAB_CUSTOMERS=0 in the
        # environment signs everyone in as demo (a site without per-customer accounts).
        "LAB_CUSTOMERS": os.environ.get("LAB_CUSTOMERS", "1"),
        "LAB_WORKERS": str(loadgen or request.processes),
    }
    settings = MatrixSettings(
        users=request.users, spawn_rate=request.spawn_rate or float(request.users), duration_s=request.duration_s,
        warmup_s=request.warmup_s, repeats=request.repeats, locustfile=LOADTESTS / SCENARIOS[request.scenario],
        scenario=request.scenario, processes=request.processes, extra_env=scenario_env,
        wrk_path=SCENARIO_PATHS[request.scenario] if request.reference_wrk else None,
        generator_prefix=tuple(generator_prefix(split)),
        generator_cpus=_cpu_count(split.generator) if split else cores,
        host_cpus=_cpu_count(split.hosts) if split else cores, machine_cpus=cores, cpu_split=cpu_split,
        max_failed_pct=request.max_failed_pct,
        master_bind_host=current.gateway if loadgen else None, remote_workers=loadgen,
    )
    provider = get_provider(state["provider"])
    results_dir = timestamped_results_dir(project.labdir.path)
    context = {"machine": {"cores": cores}, "cpu_split": cpu_split, "request": asdict(request), "money": None}
    reports: list[CellReport] = []
    found, switched = current, False
    if request.scenario == "mix":
        money.ensure_customers(project, request.users + request.processes)
    if request.scenario == API_SCENARIO:  # never written out: extra_env reaches the Locust processes only
        money.ensure_customers(project, request.users + request.processes)
        tokens = money.api_tokens(project, request.users + request.processes, API_TOKEN_NAME)
        settings = replace(settings, extra_env={**settings.extra_env, "LAB_API_TOKENS": json.dumps(tokens)})
    before = money.total_balance(project)
    try:
        with hosts_pinned(provider, project, split):
            for cell, step_overrides in cells:
                wanted = _wanted(project, state, current, cell, step_overrides)
                if wanted != current:
                    if reports:
                        _wait_until_answering(project, current, say)
                    say(f"switching the lab to {cell.label}")
                    switched = True
                    lifecycle.up(project, Overrides(), say, on_result, topology=wanted)
                    current = wanted
                    if split:  # hosts the switch made (a ladder step's cache hosts, db2) run on the hosts' CPUs too
                        provider.pin_cpus(project, split.hosts)
                resolved = replace(cell, workers=current.appserver.workers, threads=current.appserver.threads)
                cell_settings = replace(settings, extra_env={**settings.extra_env, **_scheme_env(project, cell.scheme)})
                target = _site_url(current, cell.scheme)
                folder = results_dir / resolved.label.replace(" ", "_").replace("×", "x")
                with remote_workers(project, current, settings.locustfile, current.gateway, MASTER_PORT,
                                    cell_settings.extra_env) if loadgen else nullcontext(0):
                    reports.append(measure_cell(
                        resolved, target, cell_settings, folder,
                        lambda: provider.host_cpu_seconds(project), say,
                        [h.name for h in _serving_the_scenario(current, request.scenario)],
                    ))
                prometheus = lifecycle.monitor_urls(current).get("prometheus")
                if prometheus and reports[-1].window:
                    reports[-1].monitor = host_graphs(prometheus, reports[-1].window)
                    if "error" in reports[-1].monitor:
                        say(f"{resolved.label}: no graphs from the monitor host: {reports[-1].monitor['error']}")
                _write_results(results_dir, reports, context, incomplete=f"{len(reports)} of {len(cells)} cells measured"
                               if len(reports) < len(cells) else None)
    except BaseException as error:  # a failed switch, or Ctrl-C mid-matrix: keep what was measured, put the lab back
        why = "interrupted (Ctrl-C)" if isinstance(error, KeyboardInterrupt) else one_line(error)
        _write_results(results_dir, reports, context, incomplete=f"{why}; {len(reports)} of {len(cells)} cells measured")
        say(f"kept {len(reports)} measured cell(s) in {results_dir} (marked incomplete)")
        if switched:
            _put_back(project, found, say, on_result, after_error=True)
        raise
    if switched:
        _wait_until_answering(project, current, say)
        _put_back(project, found, say, on_result)
    after = money.total_balance(project)
    context["money"] = {"before": str(before), "after": str(after), "conserved": before == after}
    verdict = "money conserved" if before == after else f"money NOT conserved: {before} before, {after} after ({after - before:+})"
    _write_results(results_dir, reports, context, incomplete=None)
    if before != after:
        raise BenchError(f"{verdict} (report in {results_dir})")
    if all(not r.measured for r in reports):
        first = reports[0]
        raise BenchError(f"no cell gave a figure; first: {first.cell.label}: {first.error or first.bottleneck} "
                         f"(report in {results_dir})")
    return BenchRun(reports, results_dir, verdict)


def _serving_the_scenario(topology: Topology, scenario: str) -> tuple[Host, ...]:
    """The hosts whose shares of the requests a cell reports: the api hosts for the API's scenario when the lab has
    them (the balancer's /api/ goes to them), else the web hosts."""
    api = topology.tier("api") if scenario == API_SCENARIO and "api" in topology.stack.tiers else ()
    return api or topology.tier("web")


def topology_label(topology: Topology) -> str:
    """gunicorn web×2 workers=2 threads=1: the lab's app server setup as `lab bench` names its configurations."""
    return Cell(topology.app_server, topology.count("web"), topology.appserver.workers, topology.appserver.threads).label


def _put_back(project: Project, found: Topology, say: Say, on_result: Callable[[RecipeResult], None],
              after_error: bool = False) -> None:
    """Return the lab to the configuration `lab bench` found it in (server, web count, workers, threads)."""
    # The whole of it: a ladder's put-back also removes cache hosts and db2 and switches the pooler.
    label = f"{topology_label(found)}; {found.describe_data_tiers()}"
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
    say(f"the lab is back as it was: {topology_label(found)}")


def compare(project: Project, first: str, second: str) -> list[dict]:
    """Deltas between two earlier bench runs (folder names under .lab/results, or paths)."""
    def cells_of(run: str) -> list[dict]:
        folder = Path(run) if "/" in run else project.labdir.results / run
        try:
            return json.loads((folder / "results.json").read_text())["cells"]
        except (OSError, ValueError, KeyError):
            raise UsageError(f"no bench results in {folder}") from None

    return compare_cells(cells_of(first), cells_of(second))


def check_threshold_values(fail_under_rps: float | None, max_p95_ms: float | None) -> None:
    """Refuse, before anything runs, a threshold no figure could be measured against."""
    if fail_under_rps is not None and not fail_under_rps > 0:
        raise UsageError(f"--fail-under-rps must be above 0 (got {fail_under_rps:g})")
    if max_p95_ms is not None and not max_p95_ms > 0:
        raise UsageError(f"--max-p95-ms must be above 0 (got {max_p95_ms:g})")


def check_thresholds(cells: list[CellReport], fail_under_rps: float | None, max_p95_ms: float | None,
                     max_failed_pct: float | None = None) -> None:
    """For CI: a distinct exit code when a measured configuration misses the bar (failed requests are one)."""
    if fail_under_rps is None and max_p95_ms is None and max_failed_pct is None:
        return
    misses = []
    for cell in cells:
        if not cell.measured:
            misses.append(f"{cell.cell.label} gave no figure ({cell.error or cell.bottleneck})")
            continue
        if fail_under_rps is not None and cell.median("rps") < fail_under_rps:
            misses.append(f"{cell.cell.label} served {cell.median('rps'):.0f} successful req/s < {fail_under_rps:g}")
        if max_p95_ms is not None and cell.median("p95_ms") > max_p95_ms:
            misses.append(f"{cell.cell.label} p95 {cell.median('p95_ms'):.0f} ms > {max_p95_ms:g}")
        if max_failed_pct is not None and cell.median("failure_pct") > max_failed_pct:
            misses.append(f"{cell.cell.label} {cell.median('failure_pct'):.1f}% failed > {max_failed_pct:g}%")
    if misses:
        raise ThresholdMissed(f"{len(misses)} threshold(s) missed; first: {misses[0]}")
