"""`lab bench` as a matrix: per cell one Locust process (warm-up, then N repeats cut from its per-second window), CPU and a verdict."""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from lab.bench.distributed import LOADGEN_TIER
from lab.bench.locust import BenchSettings, LocustSession, Window, read_window, signed_in, window_figures
from lab.bench.wrk import WrkResult, run_wrk
from lab.errors import BenchError, LabError, UsageError
from lab.system import Say

TIER_SATURATED = 0.85  # share of the cores the hosts may use: at or past it, that tier sets the pace
MACHINE_SATURATED = 0.90  # of every CPU busy, the hosts and Locust included: what else runs slows both
GENERATOR_SATURATED = 0.85  # share of the generator's cores (or of its processes): past it, Locust sets the pace
# Percent of requests failed from which, with nothing saturated, the failures are what the row is about: "add users"
# is no advice for a configuration that fails requests.
FAILING_PCT = 1.0
WARMUP_LOGIN_LIMIT_S = 90  # the warm-up waits this much longer at most for every user to sign in
PAUSE_DRAIN_S = 1  # after pausing Locust, in-flight requests finish before wrk starts
RESUME_S = 2  # after wrk, Locust's users are back at full pace before the next repeat counts
SETTLE_FIX = "longer --warmup or fewer --users"
NO_WEB_HOST = "(balancer)"  # responses nginx made itself (static files): they carry no X-Served-By


@dataclass(frozen=True)
class Cell:
    """One configuration to measure; with the request's scenario, users and duration it is the key --compare uses."""

    server: str
    web: int
    workers: int | None = None
    threads: int | None = None
    tune: str | None = None  # the tuning ladder's step (--tune), None when not on the ladder
    scheme: str | None = None  # http or https; None names a topology alone (no site URL)

    @property
    def label(self) -> str:
        knobs = "".join(f" {k}={v}" for k, v in (("workers", self.workers), ("threads", self.threads), ("tune", self.tune))
                        if v is not None)
        return f"{self.server} web×{self.web}{knobs}" + (f" {self.scheme}" if self.scheme else "")


@dataclass
class Run:
    """One measured repeat: every figure from one steady window (locust.Window), plus where the CPU went meanwhile."""

    settled: bool
    reason: str
    rps: float  # successful requests per second
    p50_ms: float
    p95_ms: float
    p99_ms: float
    failure_pct: float
    requests: int
    failures: int
    stale: int
    checked: int
    hosts: dict[str, int]
    errors: list[tuple[str, int]]
    generator_cores: float
    machine_busy: float  # 0..1 of all the machine's cores
    host_cores: dict[str, float]
    timeline: list[tuple[float, float, float]]  # (seconds, successful requests/s, p95 ms), the same window
    wrk: dict | None = None  # the wrk reference run just before this repeat (WrkResult.to_dict)

    @classmethod
    def of(cls, window: Window, generator_cores: float, machine_busy: float, host_cores: dict[str, float],
           wrk: WrkResult | None) -> "Run":
        return cls(window.settled, window.reason, window.rps, window.p50_ms, window.p95_ms, window.p99_ms,
                   window.failure_pct, window.requests, window.failures, window.stale, window.checked, window.hosts,
                   window.errors, generator_cores, machine_busy, host_cores, window.timeline,
                   wrk.to_dict() if wrk else None)


@dataclass
class CellReport:
    cell: Cell
    settings: dict
    runs: list[Run] = field(default_factory=list)
    error: str | None = None  # not measured, or measured and failed (over --max-failed-pct)
    bottleneck: str = ""
    window: tuple[float, float] | None = None  # epoch seconds: the first repeat's start to the last one's end
    monitor: dict | None = None  # the monitor host's graphs of that window (lab.bench.monitor.host_graphs)

    @property
    def settled(self) -> list[Run]:
        return [r for r in self.runs if r.settled]

    @property
    def measured(self) -> bool:
        """Some repeat gave figures."""
        return bool(self.settled)

    @property
    def not_settled(self) -> str:
        """Why no repeat gave a figure ("" when some did or none ran)."""
        return "" if self.settled or not self.runs else self.runs[0].reason

    def median(self, attribute: str) -> float:
        values = [getattr(r, attribute) for r in self.settled]
        return statistics.median(values) if values else math.nan

    def spread(self, attribute: str) -> tuple[float, float]:
        values = [getattr(r, attribute) for r in self.settled]
        return (min(values), max(values)) if values else (math.nan, math.nan)

    @property
    def wrk_runs(self) -> list[dict]:
        return [r.wrk for r in self.runs if r.wrk]

    @property
    def wrk_rps(self) -> float | None:
        return statistics.median(w["rps"] for w in self.wrk_runs) if self.wrk_runs else None

    @property
    def wrk_errors(self) -> str:
        """"" when every wrk run was clean, else the first run's errors."""
        return next((w["errors"] for w in self.wrk_runs if w["errors"]), "")

    @property
    def wrk_ratio(self) -> float | None:
        """Median over the repeats of Locust/wrk, each repeat against the wrk run just before it."""
        pairs = [r.rps / r.wrk["rps"] for r in self.settled if r.wrk and r.wrk["rps"]]
        return statistics.median(pairs) if pairs else None

    @property
    def stale(self) -> tuple[int, int]:
        """(stale reads, reads checked) over every settled repeat."""
        return sum(r.stale for r in self.settled), sum(r.checked for r in self.settled)

    @property
    def hosts(self) -> dict[str, int]:
        """Responses per web host over every settled repeat; a web host that served nothing is there with 0."""
        totals = {name: 0 for name in self.settings.get("web_hosts", [])}
        for run in self.settled:
            for name, count in run.hosts.items():
                totals[name] = totals.get(name, 0) + count
        return totals

    @property
    def idle_runs(self) -> dict[str, list[int]]:
        """Each web host that served nothing in some settled repeat, and in which repeats (from 1): a host stopped
        mid-bench serves in the first runs and not after, so totals over every repeat would hide it."""
        if not self.measured:
            return {}
        names = [n for n in self.settings.get("web_hosts", []) or self.hosts if n != NO_WEB_HOST]
        idle: dict[str, list[int]] = {}
        for index, run in enumerate(self.runs, 1):
            for name in names if run.settled else ():
                if not run.hosts.get(name):
                    idle.setdefault(name, []).append(index)
        return idle

    @property
    def idle_hosts(self) -> list[str]:
        """"web2 in runs 2, 3" for each web host that served nothing in some settled repeat."""
        return [f"{name} in run{'s' if len(runs) > 1 else ''} {', '.join(map(str, runs))}"
                for name, runs in self.idle_runs.items()]

    def to_dict(self) -> dict:
        figures = ("rps", "p50_ms", "p95_ms", "p99_ms", "failure_pct", "generator_cores", "machine_busy")
        return {
            "label": self.cell.label,
            "cell": asdict(self.cell),
            "settings": self.settings,
            "error": self.error,
            "not_settled": self.not_settled,
            "bottleneck": self.bottleneck,
            "median": {k: self.median(k) for k in figures} if self.measured else {},
            "spread": {k: self.spread(k) for k in ("rps", "p95_ms")} if self.measured else {},
            "stale": dict(zip(("stale", "checked"), self.stale)),
            "hosts": self.hosts,
            "idle_hosts": self.idle_hosts,
            "runs": [asdict(r) for r in self.runs],
            "wrk_rps": self.wrk_rps,
            "wrk_errors": self.wrk_errors,
            "locust_over_wrk": self.wrk_ratio,
            "window": list(self.window) if self.window else None,
            "monitor": self.monitor,
        }


@dataclass(frozen=True)
class MatrixSettings:
    users: int
    spawn_rate: float
    duration_s: int
    warmup_s: int
    repeats: int
    locustfile: Path
    scenario: str
    processes: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)
    wrk_path: str | None = None  # also measure this path with wrk before each repeat, as a reference ceiling
    generator_prefix: tuple[str, ...] = ()  # Locust and wrk run under it (lab.machine.cpus.generator_prefix)
    generator_cpus: int = 1  # cores the load generator may use
    host_cpus: int = 1  # cores the lab's hosts may use
    machine_cpus: int = 0  # every core of the machine (0: not known, no check of what else ran)
    cpu_split: str = "shared"  # what the report states about the split
    max_failed_pct: float | None = None
    master_bind_host: str | None = None  # remote Locust workers (loadgen hosts) connect to the master here
    remote_workers: int = 0


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def tier_of(host: str) -> str:
    return host.rstrip("0123456789")


# Cores the machine was busy beyond what the lab's hosts and Locust used, from which a run is called noisy: something
# else (another lab, a build) took CPU the figures needed.
OTHERS_NOISY_CORES = 0.25


def verdict(runs: Sequence[Run], users: int, processes: int, generator_cpus: int, host_cpus: int,
            machine_cpus: int = 0) -> str:
    """What limited the cell, from saturation: the generator, a tier, or (nothing saturated) the closed loop; failures
    named; a machine busy with other programs too (machine_cpus given) called a noisy run."""
    if not runs:
        return "not measured"
    settled = [r for r in runs if r.settled]
    if not settled:
        return f"did not settle: {runs[0].reason}; {SETTLE_FIX}"
    unsettled = [r for r in runs if not r.settled]
    return _saturation(settled, users, processes, generator_cpus, host_cpus) + _others(settled, machine_cpus) + (
        f"; only {len(settled)} of {len(runs)} repeats settled (another: {unsettled[0].reason})" if unsettled else "")


NOISY_RUN = "a noisy run"  # in a verdict: the machine was busy with more than the lab and Locust


def _others(settled: Sequence[Run], machine_cpus: int) -> str:
    """"; a noisy run: …" when the machine was busier than the lab's hosts and Locust account for."""
    if not machine_cpus or not all(r.host_cores for r in settled):
        return ""
    others = statistics.median(r.machine_busy * machine_cpus - sum(r.host_cores.values()) - r.generator_cores
                               for r in settled)
    if others < OTHERS_NOISY_CORES:
        return ""
    return (f"; {NOISY_RUN}: the machine was {others:.2f} core(s) busier than the lab's hosts and Locust account for "
            "(other programs, or a VM's own overhead): measure again on a quiet machine")


def _saturation(settled: Sequence[Run], users: int, processes: int, generator_cpus: int, host_cpus: int) -> str:
    generator = statistics.median(r.generator_cores for r in settled)
    per_host: dict[str, list[float]] = {}
    for run in settled:
        for name, value in run.host_cores.items():
            per_host.setdefault(name, []).append(value)
    tiers: dict[str, float] = {}
    for name, values in per_host.items():
        tiers[tier_of(name)] = tiers.get(tier_of(name), 0.0) + statistics.median(values)
    failed = statistics.median(r.failure_pct for r in settled)
    errors: dict[str, int] = {}
    for run in settled:
        for error, count in run.errors:
            errors[error] = errors.get(error, 0) + count
    failures = ""
    if failed > 0 or errors:
        worst = max(errors.items(), key=lambda item: item[1])[0] if errors else "unknown"
        failures = f"; {failed:.1f}% failed (most: {worst})"
    # Locust's workers on loadgen hosts are the load generator, not servers under test: counted as Locust's cores.
    remote_workers = sum(1 for name in per_host if tier_of(name) == LOADGEN_TIER)
    generator += tiers.pop(LOADGEN_TIER, 0.0)
    generator_limit = remote_workers or min(processes, generator_cpus)
    if generator >= GENERATOR_SATURATED * generator_limit:
        return f"load generator: Locust at {generator:.2f} of {generator_limit} core(s){failures}"
    if tiers:
        busiest, cores = max(tiers.items(), key=lambda item: item[1])
        everything = sum(tiers.values())
        if cores >= TIER_SATURATED * host_cpus:
            return f"{busiest} tier: {cores:.2f} of the hosts' {host_cpus} core(s){failures}"
        if everything >= TIER_SATURATED * host_cpus:
            return (f"the hosts' {host_cpus} core(s): {everything:.2f} busy, most in {busiest} ({cores:.2f})"
                    f"{failures}")
        measured = f"busiest {busiest} {cores:.2f} of {host_cpus} core(s), Locust {generator:.2f}"
    else:
        measured = f"per-host CPU not measured, Locust {generator:.2f}"
    busy = statistics.median(r.machine_busy for r in settled)
    if busy >= MACHINE_SATURATED:
        return f"the machine's CPUs: {busy:.0%} busy, other programs included ({measured}){failures}"
    if failed >= FAILING_PCT:
        return f"failures: {failures.removeprefix('; ')}, nothing saturated ({measured})"
    p50_s = statistics.median(r.p50_ms for r in settled) / 1000
    loop = f"≈ {users / p50_s:,.0f} req/s" if p50_s > 0 else ""
    return f"closed loop: {users} users × {p50_s * 1000:,.0f} ms {loop}, nothing saturated ({measured}); add users{failures}"


def significant(a: Sequence[float], b: Sequence[float]) -> bool | None:
    """True when the medians differ by more than either side's spread (max − min); None with fewer than 2 repeats."""
    if len(a) < 2 or len(b) < 2:
        return None
    gap = abs(statistics.median(a) - statistics.median(b))
    return gap > max(a) - min(a) and gap > max(b) - min(b)


def beyond_spread(a: Sequence[float], b: Sequence[float]) -> bool | None:
    """significant(), and the two min–max ranges apart as well; None with fewer than 2 repeats."""
    # Skewed repeats can put the medians further apart than either spread while the ranges still overlap: some
    # repeat of one side then matched the other side's, so the difference is not told apart from the noise.
    verdict = significant(a, b)
    return verdict and (max(a) < min(b) or max(b) < min(a))


def noise_verdict(beyond: bool | None) -> str:
    """How a tls_cost row's beyond_spread reads: the terminal and report.html say the same."""
    return {True: "beyond the spread of the repeats",
            False: "within the noise: the repeats' spreads overlap, or are wider than the difference",
            None: "can't tell: fewer than 2 repeats, so the spread is unknown"}[beyond]


def measure_cell(cell: Cell, target: str, settings: MatrixSettings, results_dir: Path,
                 host_cpu: Callable[[], dict[str, float]], say: Say, web_hosts: Sequence[str]) -> CellReport:
    """Warm up (until every user has signed in, bounded), then the repeats from the same Locust process."""
    report = CellReport(cell=cell, settings={
        "server": cell.server, "web": cell.web, "workers": cell.workers, "threads": cell.threads, "tune": cell.tune,
        "scheme": cell.scheme, "users": settings.users, "duration_s": settings.duration_s,
        "warmup_s": settings.warmup_s, "repeats": settings.repeats, "processes": settings.processes,
        "scenario": settings.scenario, "target": target, "wrk_path": settings.wrk_path, "web_hosts": list(web_hosts),
        "cpu_split": settings.cpu_split, "max_failed_pct": settings.max_failed_pct,
    })
    wrk_s = settings.duration_s + PAUSE_DRAIN_S + RESUME_S if settings.wrk_path else 0
    hard_limit = settings.warmup_s + WARMUP_LOGIN_LIMIT_S + settings.repeats * (settings.duration_s + wrk_s) + 30
    locust = BenchSettings(target, settings.users, settings.spawn_rate, hard_limit, settings.locustfile, results_dir,
                           processes=settings.processes, generator_prefix=settings.generator_prefix,
                           master_bind_host=settings.master_bind_host, expect_workers=settings.remote_workers,
                           extra_env=settings.extra_env)
    spans: list[tuple[float, float, float, float, dict[str, float], WrkResult | None]] = []
    try:
        with LocustSession(locust) as session:
            say(f"{cell.label}: warm-up {settings.warmup_s} s (not counted; users sign in)")
            session.wait(settings.warmup_s)
            limit = time.monotonic() + WARMUP_LOGIN_LIMIT_S
            while signed_in(session.paths["window"]) < settings.users and time.monotonic() < limit:
                session.wait(1)
            for index in range(1, settings.repeats + 1):
                wrk = None
                if settings.wrk_path:  # interleaved: each repeat's wrk run just before it, so drift hits both
                    session.control("pause")
                    session.wait(PAUSE_DRAIN_S)
                    wrk = run_wrk(target + settings.wrk_path, settings.users, settings.duration_s,
                                  settings.generator_prefix)
                    session.control("run")
                    session.wait(RESUME_S)
                hosts_before, machine_before, generator_before = host_cpu(), machine_cpu(), session.cpu_seconds()
                started = time.time()
                session.wait(settings.duration_s)
                ended = time.time()
                hosts_after, machine_after = host_cpu(), machine_cpu()
                wall = ended - started
                # Live progress; the repeat's figures follow once the cell ends (Locust's window file lags behind).
                say(f"{cell.label}: run {index}/{settings.repeats} done ({wall:.0f} s)")
                spans.append((started, ended, (session.cpu_seconds() - generator_before) / wall,
                              (machine_after[0] - machine_before[0]) / max(machine_after[1] - machine_before[1], 1),
                              {h: (hosts_after[h] - hosts_before.get(h, hosts_after[h])) / wall for h in hosts_after}, wrk))
            session.stop()
    except LabError as error:  # e.g. Locust died or wrk failed: the cell is marked, the matrix goes on
        report.error = " ".join(str(error).split())
        say(f"{cell.label}: failed: {report.error}")
    # The repeats that finished before an error still count: their seconds are in the window file.
    seconds = read_window(results_dir / "window.jsonl") if spans else []
    if spans:
        report.window = (spans[0][0], spans[-1][1])
    for index, (started, ended, generator, busy, hosts, wrk) in enumerate(spans, 1):
        run = Run.of(window_figures(seconds, started, ended, settings.users), generator, busy, hosts, wrk)
        report.runs.append(run)
        reference = f"; wrk {wrk.rps:,.0f} req/s" + (f" ({wrk.describe_errors()})" if wrk.errors else "") if wrk else ""
        say(f"{cell.label}: run {index}/{settings.repeats}: " + (
            f"{run.rps:,.0f} req/s, p95 {run.p95_ms:,.0f} ms, {run.failure_pct:.1f}% failed{reference}"
            if run.settled else f"did not settle ({run.reason}){reference}"))
    if report.measured and not report.error and settings.max_failed_pct is not None \
            and report.median("failure_pct") > settings.max_failed_pct:
        report.error = f"{report.median('failure_pct'):.1f}% of requests failed (--max-failed-pct {settings.max_failed_pct:g})"
    report.bottleneck = verdict(report.runs, settings.users, settings.processes, settings.generator_cpus, settings.host_cpus,
                                settings.machine_cpus)
    return report


COMPARE_KEY = ("server", "web", "workers", "threads", "scenario", "users", "duration_s", "tune", "scheme")


def cell_key(cell: dict) -> tuple:
    """A results.json cell's whole key: what it ran (server … scheme) and how it was loaded (scenario, users, duration)."""
    both = {**cell.get("settings", {}), **cell.get("cell", {})}
    return tuple(both.get(name) for name in COMPARE_KEY)


def _rps_values(cell: dict) -> list[float]:
    return [r["rps"] for r in cell.get("runs", []) if r.get("settled")]


def _deltas(cell: dict, other: dict) -> dict:
    """Two measured results.json cells, cell → other: median req/s and p95 as (cell, other, % change), the repeats'
    req/s spreads (max − min) and whether the req/s gap is significant()."""
    row: dict = {}
    for key in ("rps", "p95_ms"):
        old, new = cell["median"][key], other["median"][key]
        row[key] = (old, new, (new - old) / old * 100 if old else math.nan)
    first, second = _rps_values(cell), _rps_values(other)
    # One repeat has no spread: shown as "—", never as 0
    row["spread"] = tuple(max(v) - min(v) if len(v) >= 2 else math.nan for v in (first, second))
    row["significant"] = significant(first, second)
    # A run its own verdict called noisy measured its neighbours too: a difference may be theirs.
    row["noisy"] = [side for side, c in (("A", cell), ("B", other)) if NOISY_RUN in (c.get("bottleneck") or "")]
    return row


def compare_cells(a: Iterable[dict], b: Iterable[dict]) -> list[dict]:
    """Deltas of median requests/s and p95 between two runs' cells with the same whole key, and whether they matter."""
    a, b = list(a), list(b)
    scenarios = ({c.get("settings", {}).get("scenario") for c in a}, {c.get("settings", {}).get("scenario") for c in b})
    if scenarios[0].isdisjoint(scenarios[1]):
        raise UsageError(f"the runs measured different scenarios ({', '.join(map(str, sorted(scenarios[0], key=str)))} vs "
                         f"{', '.join(map(str, sorted(scenarios[1], key=str)))}): their figures are not comparable")
    by_key = {cell_key(c): c for c in b}
    rows = []
    for cell in a:
        other = by_key.get(cell_key(cell))
        if not other or not cell.get("median") or not other.get("median"):
            continue
        rows.append({"label": cell["label"], **_deltas(cell, other)})
    if not rows:
        keys_a, keys_b = {cell_key(c) for c in a}, {cell_key(c) for c in b}
        differing = sorted({name for ka in keys_a for kb in keys_b for name, x, y in zip(COMPARE_KEY, ka, kb) if x != y})
        raise BenchError("the two runs have no configuration in common to compare"
                         + (f" (they differ in {', '.join(differing)})" if differing else ""))
    return rows


SCHEME = COMPARE_KEY.index("scheme")


def _key_but_scheme(cell: dict) -> tuple:
    key = cell_key(cell)
    return key[:SCHEME] + key[SCHEME + 1:]


def _finite(value: float) -> float | None:
    """results.json says null, not NaN (which is not JSON), for a change from 0."""
    return None if math.isnan(value) else value


def tls_cost(cells: Iterable[dict]) -> list[dict]:
    """The cost of TLS within one run: each http cell against the https cell of otherwise the same whole key.

    A pair counts only when both cells gave figures and neither failed: a cell over --max-failed-pct or cut short by
    an error would put its failures, not TLS, into the difference. Keys are fixed (results.json's "tls_cost").
    """
    usable = [c for c in cells if c.get("median") and not c.get("error")]
    https = {_key_but_scheme(c): c for c in usable if c.get("cell", {}).get("scheme") == "https"}
    rows = []
    for plain in usable:
        tls = https.get(_key_but_scheme(plain))
        if plain.get("cell", {}).get("scheme") != "http" or tls is None:
            continue
        deltas = _deltas(plain, tls)
        (http_rps, https_rps, rps_change), (p95_http, p95_https, p95_change) = deltas["rps"], deltas["p95_ms"]
        rows.append({
            "configuration": Cell(**{**plain["cell"], "scheme": None}).label,
            "http_rps": http_rps,
            "https_rps": https_rps,
            "https_over_http": https_rps / http_rps if http_rps else None,
            "rps_change_pct": _finite(rps_change),
            "http_rps_spread": list(plain["spread"]["rps"]),
            "https_rps_spread": list(tls["spread"]["rps"]),
            "p95_http_ms": p95_http,
            "p95_https_ms": p95_https,
            "p95_change_pct": _finite(p95_change),
            "beyond_spread": beyond_spread(_rps_values(plain), _rps_values(tls)),
        })
    return rows
