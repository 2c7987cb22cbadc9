"""`lab bench` as a matrix: per cell (app server × web count × knobs) a warm-up, N measured runs, CPU and a verdict."""

from __future__ import annotations

import csv
import math
import resource
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from lab.bench.locust import BenchResult, BenchSettings, run_locust
from lab.bench.wrk import run_wrk
from lab.errors import BenchError, LabError
from lab.system import Say

NOISE = 0.10  # run-to-run spread measured on this kind of machine: differences below it mean little
GENERATOR_SATURATED = 0.85  # cores per Locust process: past this, Locust (not the servers) sets the pace
MACHINE_SATURATED = 0.90


@dataclass(frozen=True)
class Cell:
    """One configuration to measure."""

    server: str
    web: int
    workers: int | None = None
    threads: int | None = None

    @property
    def label(self) -> str:
        knobs = "".join(f" {k}={v}" for k, v in (("workers", self.workers), ("threads", self.threads)) if v is not None)
        return f"{self.server} web×{self.web}{knobs}"


@dataclass
class Run:
    """One measured run: Locust's figures (steady state) and where the CPU went meanwhile."""

    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    failure_pct: float
    requests: int
    generator_cores: float
    machine_busy: float  # 0..1 of all the machine's cores
    host_cores: dict[str, float]
    timeline: list[tuple[float, float, float]]  # (seconds, requests/s, p95 ms)
    results_dir: str


@dataclass
class CellReport:
    cell: Cell
    settings: dict
    runs: list[Run] = field(default_factory=list)
    error: str | None = None
    bottleneck: str = ""
    wrk_rps: float | None = None  # wrk's requests/s at the same target and path: a ceiling for Locust

    @property
    def wrk_ratio(self) -> float | None:
        return self.median("rps") / self.wrk_rps if self.wrk_rps and self.runs else None

    def median(self, attribute: str) -> float:
        values = [getattr(r, attribute) for r in self.runs]
        return statistics.median(values) if values else math.nan

    def spread(self, attribute: str) -> tuple[float, float]:
        values = [getattr(r, attribute) for r in self.runs]
        return (min(values), max(values)) if values else (math.nan, math.nan)

    def to_dict(self) -> dict:
        return {
            "label": self.cell.label,
            "cell": asdict(self.cell),
            "settings": self.settings,
            "error": self.error,
            "bottleneck": self.bottleneck,
            "median": {k: self.median(k) for k in ("rps", "p50_ms", "p95_ms", "p99_ms", "failure_pct", "generator_cores", "machine_busy")}
            if self.runs else {},
            "spread": {k: self.spread(k) for k in ("rps", "p95_ms")} if self.runs else {},
            "runs": [asdict(r) for r in self.runs],
            "wrk_rps": self.wrk_rps,
            "locust_over_wrk": self.wrk_ratio,
        }


@dataclass(frozen=True)
class MatrixSettings:
    users: int
    spawn_rate: float
    duration_s: int
    warmup_s: int
    repeats: int
    locustfile: Path
    processes: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)
    wrk_path: str | None = None  # also measure this path with wrk, as a reference ceiling


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


STARTUP_PREFIX = "start: "  # locustfiles name a user's start-up requests (on_start: a login) with this prefix


def steady_state(result: BenchResult, ramp_s: float) -> tuple[float, list[tuple[float, float, float]]]:
    """Requests/s in the steady state, and the per-second timeline.

    Locust's own total counts the ramp-up in, and every user's start-up (a login costs a password hash:
    hundreds of ms of CPU each): the steady state begins once all users are spawned and the last start-up
    request is done.
    """
    history = result.files.get("csv_history")
    if not history or not Path(history).exists():
        return result.rps, []
    every_row = list(csv.DictReader(Path(history).open()))
    rows = [r for r in every_row if r.get("Name") == "Aggregated"]
    if len(rows) < 3:
        return result.rps, []
    start = float(rows[0]["Timestamp"])
    timeline = []
    for row in rows:
        p95 = row.get("95%", "N/A")
        timeline.append((float(row["Timestamp"]) - start, float(row["Requests/s"] or 0), float(p95) if p95 not in ("N/A", "") else 0.0))
    settled = max(ramp_s, startup_done_s(every_row, start) + 1)
    steady = [r for r in rows if float(r["Timestamp"]) - start >= settled]
    if len(steady) < 2:
        return result.rps, timeline
    first, last = steady[0], steady[-1]
    seconds = float(last["Timestamp"]) - float(first["Timestamp"])
    counted = float(last["Total Request Count"]) - float(first["Total Request Count"])
    return (counted / seconds if seconds > 0 else result.rps), timeline


def startup_done_s(rows: list[dict], start: float) -> float:
    """Seconds from `start` until every start-up request (named STARTUP_PREFIX...) had reached its final count."""
    final: dict[str, float] = {}
    for row in rows:
        name = row.get("Name") or ""
        if name.startswith(STARTUP_PREFIX):
            final[name] = max(final.get(name, 0.0), float(row.get("Total Request Count") or 0))
    done = 0.0
    for name, count in final.items():
        reached = min(float(r["Timestamp"]) for r in rows if r.get("Name") == name and float(r.get("Total Request Count") or 0) >= count)
        done = max(done, reached - start)
    return done


def verdict(runs: list[Run], processes: int, cores: int) -> str:
    """Name what limited the cell: the load generator, the machine's CPU (and who used it), or neither."""
    if not runs:
        return "not measured"
    generator = statistics.median(r.generator_cores for r in runs)
    busy = statistics.median(r.machine_busy for r in runs)
    hosts: dict[str, float] = {}
    for r in runs:
        for name, value in r.host_cores.items():
            hosts.setdefault(name, []).append(value)  # type: ignore[arg-type]
    per_host = {name: statistics.median(values) for name, values in hosts.items()}  # type: ignore[arg-type]
    tiers: dict[str, float] = {}
    for name, value in per_host.items():
        tier = name.rstrip("0123456789")
        tiers[tier] = tiers.get(tier, 0.0) + value
    if generator >= GENERATOR_SATURATED * processes:
        return f"load generator (Locust at {generator:.2f} cores of {processes} process(es))"
    busiest = max(tiers.items(), key=lambda kv: kv[1]) if tiers else ("servers", 0.0)
    if busy >= MACHINE_SATURATED:
        return (f"machine CPU ({busy:.0%} of {cores} cores busy: {busiest[0]} {busiest[1]:.2f} cores, "
                f"Locust {generator:.2f})")
    return f"{busiest[0]} tier ({busiest[1]:.2f} cores), machine {busy:.0%} busy"


def measure_cell(
    cell: Cell,
    target: str,
    settings: MatrixSettings,
    results_dir: Path,
    host_cpu: Callable[[], dict[str, float]],
    say: Say,
    cores: int,
) -> CellReport:
    report = CellReport(cell=cell, settings={
        "server": cell.server, "web": cell.web, "workers": cell.workers, "threads": cell.threads,
        "users": settings.users, "duration_s": settings.duration_s, "warmup_s": settings.warmup_s,
        "repeats": settings.repeats, "processes": settings.processes, "machine_cores": cores,
        "scenario": settings.locustfile.stem, "target": target, "wrk_path": settings.wrk_path,
    })
    ramp_s = math.ceil(settings.users / settings.spawn_rate) + 1

    def locust(name: str, seconds: int) -> BenchSettings:
        return BenchSettings(target, settings.users, settings.spawn_rate, seconds, settings.locustfile,
                             results_dir / name, processes=settings.processes, extra_env=settings.extra_env)

    try:
        if settings.warmup_s:
            say(f"{cell.label}: warm-up {settings.warmup_s} s (not counted)")
            run_locust(locust("warmup", settings.warmup_s))
        for index in range(1, settings.repeats + 1):
            before_hosts, before_machine, before_children = host_cpu(), machine_cpu(), children_cpu_seconds()
            started = time.monotonic()
            result = run_locust(locust(f"run{index}", settings.duration_s))
            wall = time.monotonic() - started
            after_hosts, after_machine = host_cpu(), machine_cpu()
            rps, timeline = steady_state(result, ramp_s)
            report.runs.append(Run(
                rps=rps, p50_ms=result.p50_ms, p95_ms=result.p95_ms, p99_ms=result.p99_ms,
                failure_pct=100 * result.failure_ratio, requests=result.requests,
                generator_cores=(children_cpu_seconds() - before_children) / wall,
                machine_busy=(after_machine[0] - before_machine[0]) / max(after_machine[1] - before_machine[1], 1),
                host_cores={h: (after_hosts[h] - before_hosts.get(h, after_hosts[h])) / wall for h in after_hosts},
                timeline=timeline, results_dir=str(results_dir / f"run{index}"),
            ))
            say(f"{cell.label}: run {index}/{settings.repeats}: {rps:.0f} req/s, p95 {result.p95_ms:.0f} ms, "
                f"{100 * result.failure_ratio:.1f}% failed")
        if settings.wrk_path:
            report.wrk_rps = run_wrk(target + settings.wrk_path, settings.users, settings.duration_s)
            say(f"{cell.label}: wrk reference {report.wrk_rps:.0f} req/s on {settings.wrk_path}")
    except LabError as error:  # e.g. the balancer went down mid-run: the cell is marked, the matrix goes on
        report.error = " ".join(str(error).split())
        say(f"{cell.label}: failed: {report.error}")
    if report.runs and report.median("failure_pct") > 50 and not report.error:
        report.error = f"{report.median('failure_pct'):.0f}% of requests failed"
    report.bottleneck = verdict(report.runs, settings.processes, cores)
    return report


def compare_cells(a: Iterable[dict], b: Iterable[dict]) -> list[dict]:
    """Deltas of median requests/s and p95 between two runs' cells with the same label."""
    by_label = {c["label"]: c for c in b}
    rows = []
    for cell in a:
        other = by_label.get(cell["label"])
        if not other or not cell.get("median") or not other.get("median"):
            continue
        row = {"label": cell["label"]}
        for key in ("rps", "p95_ms"):
            old, new = cell["median"][key], other["median"][key]
            row[key] = (old, new, (new - old) / old * 100 if old else math.nan)
        row["significant"] = abs(row["rps"][2]) > NOISE * 100
        rows.append(row)
    if not rows:
        raise BenchError("the two runs have no cell in common to compare")
    return rows
