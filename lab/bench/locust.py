"""Run a Locust load test in a child process and turn its output files into a BenchResult."""
from __future__ import annotations

import csv
import importlib.metadata
import importlib.util
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import count
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Mapping, NamedTuple

from lab.errors import BenchError
from lab.files import write_atomically

# The hard limit on one run is duration_s + this. It covers interpreter and
# locustfile start-up, STOP_TIMEOUT_S and writing the reports.
TIMEOUT_GRACE_S = 60
# How long users may finish a request that is in flight when the run time is
# up, so slow tail requests are counted instead of being cut off.
STOP_TIMEOUT_S = 5
# After SIGTERM Locust still writes its reports; give it that long before SIGKILL.
TERM_WAIT_S = 5
CSV_PREFIX = "locust"
STDERR_TAIL_LINES = 20
MAX_ERRORS = 10

OutputCallback = Callable[[str], None]


class EndpointStats(NamedTuple):
    """One row of the stats table; times in milliseconds as Locust rounds them."""

    name: str
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


class FailureReason(NamedTuple):
    """One distinct failure Locust saw: which request, the error text, how often."""

    name: str
    error: str
    occurrences: int


@dataclass(frozen=True)
class BenchSettings:
    target: str
    users: int
    spawn_rate: float
    duration_s: int
    locustfile: Path
    results_dir: Path
    processes: int = 1  # Locust worker processes; one is usually best on a 2-core machine
    extra_env: Mapping[str, str] = field(default_factory=dict, hash=False)  # e.g. the demo user's password; never written out

    def __post_init__(self) -> None:
        # Accept str paths from callers but store Paths, so the rest never has to care.
        object.__setattr__(self, "locustfile", Path(self.locustfile))
        object.__setattr__(self, "results_dir", Path(self.results_dir))
        if not self.target.startswith(("http://", "https://")):
            raise BenchError(f"bench target must be an http:// or https:// URL, got {self.target!r}")
        if self.users < 1:
            raise BenchError(f"bench needs at least 1 user, got {self.users}")
        if not self.spawn_rate > 0:
            raise BenchError(f"spawn rate must be > 0 users/s, got {self.spawn_rate}")
        if self.duration_s < 1:
            raise BenchError(f"bench duration must be at least 1 s, got {self.duration_s}")


@dataclass(frozen=True)
class BenchResult:
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    failure_ratio: float
    per_endpoint: tuple[EndpointStats, ...]
    # A dict is unhashable; keep it out of the generated __hash__.
    files: dict[str, Path] = field(hash=False)
    errors: tuple[FailureReason, ...] = ()


def settings_to_dict(settings: BenchSettings) -> dict[str, Any]:
    return {
        "target": settings.target,
        "users": settings.users,
        "spawn_rate": settings.spawn_rate,
        "duration_s": settings.duration_s,
        # Absolute: results.json is read later, from anywhere.
        "locustfile": str(settings.locustfile.resolve()),
        "results_dir": str(settings.results_dir.resolve()),
        "processes": settings.processes,
    }


def result_to_dict(result: BenchResult) -> dict[str, Any]:
    """A BenchResult as plain JSON types (paths as strings, rows as dicts)."""
    return {
        "requests": result.requests,
        "failures": result.failures,
        "failure_ratio": result.failure_ratio,
        "rps": result.rps,
        "p50_ms": result.p50_ms,
        "p95_ms": result.p95_ms,
        "p99_ms": result.p99_ms,
        "per_endpoint": [row._asdict() for row in result.per_endpoint],
        "errors": [reason._asdict() for reason in result.errors],
        "files": {key: str(Path(path)) for key, path in result.files.items()},
    }


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def timestamped_results_dir(root: Path) -> Path:
    """Create and return root/results/YYYYmmdd-HHMMSS (UTC), adding -2, -3 ... if taken.

    The directory is created here: mkdir is the only check that cannot race
    with a second run started in the same second.
    """
    parent = Path(root) / "results"
    parent.mkdir(parents=True, exist_ok=True)
    stamp = _utcnow().strftime("%Y%m%d-%H%M%S")
    for n in count(1):
        candidate = parent / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise AssertionError("unreachable")


def output_paths(results_dir: Path) -> dict[str, Path]:
    """Every file a run writes into results_dir, by key."""
    return {
        "csv_stats": results_dir / f"{CSV_PREFIX}_stats.csv",
        "csv_failures": results_dir / f"{CSV_PREFIX}_failures.csv",
        "csv_history": results_dir / f"{CSV_PREFIX}_stats_history.csv",
        "csv_exceptions": results_dir / f"{CSV_PREFIX}_exceptions.csv",
        "html": results_dir / "report.html",
        # --json-file appends ".json" to the name it is given.
        "locust_json": results_dir / f"{CSV_PREFIX}.json",
        "json": results_dir / "results.json",
    }


def locust_command(settings: BenchSettings) -> list[str]:
    """The argv that runs Locust for these settings (paths made absolute: Locust runs in results_dir)."""
    results_dir = settings.results_dir.resolve()
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(settings.locustfile.resolve()),
        "--headless",
        "--host",
        settings.target,
        "--users",
        str(settings.users),
        "--spawn-rate",
        str(settings.spawn_rate),
        "--run-time",
        f"{settings.duration_s}s",
        "--stop-timeout",
        str(STOP_TIMEOUT_S),
        "--csv",
        str(results_dir / CSV_PREFIX),
        "--csv-full-history",  # per-request history too: the steady state starts once start-up requests are done
        "--html",
        str(results_dir / "report.html"),
        "--json-file",
        str(results_dir / CSV_PREFIX),
        "--only-summary",
        *(["--processes", str(settings.processes)] if settings.processes > 1 else []),
    ]


def _child_env(extra: Mapping[str, str]) -> dict[str, str]:
    # LOCUST_* variables would silently override what BenchSettings says
    # (users, run time, host ...), making results.json lie about the run.
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def _pump(stream: IO[str], tag: str, sink: queue.Queue[tuple[str, str | None]]) -> None:
    try:
        for line in stream:
            sink.put((tag, line.rstrip("\r\n")))
    finally:
        sink.put((tag, None))


def _signal_group(proc: subprocess.Popen[str], sig: int) -> None:
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM (Locust then writes its reports), SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    _signal_group(proc, signal.SIGTERM)
    try:
        proc.wait(timeout=TERM_WAIT_S)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        # A second Ctrl-C while waiting means "now": do not leave it running.
        _signal_group(proc, getattr(signal, "SIGKILL", signal.SIGTERM))
        proc.wait()


_LOG_PREFIX = re.compile(r"^\[[^\]]*\] \S+?/(?P<level>[A-Z]+)/[\w.]+: (?P<message>.*)$")
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b.*")


def _gist(lines: Iterable[str]) -> str:
    """The one stderr line that best says what went wrong, or "" when there is none.

    Preference: the last exception line of a traceback, else the last ERROR or
    CRITICAL log message, else the last line that is not routine INFO/DEBUG
    logging. Log prefixes are stripped.
    """
    cleaned: list[tuple[str, str]] = []
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        match = _LOG_PREFIX.match(line)
        cleaned.append((match["level"], match["message"]) if match else ("", line))
    for _, message in reversed(cleaned):
        if _EXCEPTION_LINE.match(message):
            return message
    for level, message in reversed(cleaned):
        if level in ("ERROR", "CRITICAL"):
            return message
    for level, message in reversed(cleaned):
        if level not in ("INFO", "DEBUG"):
            return message
    return ""


def _with_gist(what: str, lines: Iterable[str]) -> BenchError:
    gist = _gist(lines)
    return BenchError(f"{what}: {gist}" if gist else what)


def _run(
    cmd: list[str], cwd: Path, timeout_s: float, on_output: OutputCallback | None, extra_env: Mapping[str, str]
) -> tuple[int, deque[str]]:
    """Run cmd, streaming its lines to on_output from this thread; return (exit code, stderr tail)."""
    stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
    lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=_child_env(extra_env),
        # Not a tty, so Locust's keyboard listener stays off and leaves the terminal alone.
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        # Own process group: Ctrl-C reaches only us, and we stop Locust deliberately.
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    pumps = [
        threading.Thread(target=_pump, args=(proc.stdout, "out", lines), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, "err", lines), daemon=True),
    ]
    for pump in pumps:
        pump.start()
    deadline = time.monotonic() + timeout_s
    try:
        open_streams = len(pumps)
        while open_streams:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _stop(proc)
                raise _with_gist(f"locust did not finish within {timeout_s:g} s and was killed", stderr_tail)
            try:
                tag, line = lines.get(timeout=min(remaining, 0.2))
            except queue.Empty:
                continue
            if line is None:
                open_streams -= 1
                continue
            if tag == "err":
                stderr_tail.append(line)
            if on_output is not None:
                on_output(line)
        try:
            returncode = proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            _stop(proc)
            raise BenchError(f"locust did not exit within {timeout_s:g} s and was killed") from None
    except BaseException:
        # KeyboardInterrupt, or on_output raising: never leave Locust running behind us.
        _stop(proc)
        raise
    finally:
        for pump in pumps:
            pump.join(timeout=1)
        for stream in (proc.stdout, proc.stderr):
            stream.close()
    return returncode, stderr_tail


def _percentile(response_times: dict[int, int], num_requests: int, percent: float) -> int:
    # Same walk as locust.stats.calculate_response_time_percentile, so our
    # numbers match Locust's own report exactly.
    num_of_request = int(num_requests * percent)
    processed = 0
    for response_time in sorted(response_times, reverse=True):
        processed += response_times[response_time]
        if num_requests - processed <= num_of_request:
            return response_time
    return 0


def _entry_stats(
    name: str, requests: int, failures: int, timed: int, times: dict[int, int], seconds: float
) -> EndpointStats:
    return EndpointStats(
        name=name,
        requests=requests,
        failures=failures,
        rps=requests / seconds if seconds > 0 else 0.0,
        p50_ms=float(_percentile(times, timed, 0.50)),
        p95_ms=float(_percentile(times, timed, 0.95)),
        p99_ms=float(_percentile(times, timed, 0.99)),
    )


def _display_name(method: str | None, name: str) -> str:
    # Locust keys its stats on (method, name); keep both so rows stay distinct.
    return f"{method} {name}" if method else name


def parse_stats_json(path: Path) -> tuple[EndpointStats, tuple[EndpointStats, ...]]:
    """(aggregated row, per-endpoint rows) from the file Locust writes with --json-file.

    This, not locust_stats.csv, is the source of truth: Locust rewrites the CSV
    once a second and does not rewrite it at shutdown, so the CSV misses up to
    the last second of the run, while the JSON is written from the final stats.
    """
    entries = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of stats entries")
    starts = [e["start_time"] for e in entries if e.get("start_time")]
    ends = [e["last_request_timestamp"] for e in entries if e.get("last_request_timestamp")]
    # Locust divides every row by the same wall-clock span: first to last request.
    seconds = (max(ends) - min(starts)) if starts and ends else 0.0
    rows: list[EndpointStats] = []
    all_times: dict[int, int] = {}
    total_requests = total_failures = total_timed = 0
    for e in sorted(entries, key=lambda e: (e.get("name") or "", e.get("method") or "")):
        times = {int(float(k)): int(v) for k, v in (e.get("response_times") or {}).items()}
        requests = int(e.get("num_requests") or 0)
        failures = int(e.get("num_failures") or 0)
        timed = requests - int(e.get("num_none_requests") or 0)
        rows.append(_entry_stats(_display_name(e.get("method"), e["name"]), requests, failures, timed, times, seconds))
        total_requests += requests
        total_failures += failures
        total_timed += timed
        for k, v in times.items():
            all_times[k] = all_times.get(k, 0) + v
    total = _entry_stats("Aggregated", total_requests, total_failures, total_timed, all_times, seconds)
    return total, tuple(rows)


def _csv_float(value: str | None) -> float:
    # Locust writes "N/A" for percentiles of a row without requests.
    try:
        return float(value) if value not in (None, "", "N/A") else 0.0
    except ValueError:
        return 0.0


def parse_stats_csv(path: Path) -> tuple[EndpointStats, tuple[EndpointStats, ...]]:
    """(aggregated row, per-endpoint rows) from locust_stats.csv.

    Only a fallback for when locust.json is missing (Locust died before its
    shutdown): the CSV is a snapshot up to a second older than the end of the run.
    Raises ValueError when there is no "Aggregated" row (Locust never got going).
    """
    aggregated: EndpointStats | None = None
    rows: list[EndpointStats] = []
    with Path(path).open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            stats = EndpointStats(
                name=_display_name(row.get("Type"), row.get("Name") or ""),
                requests=int(_csv_float(row.get("Request Count"))),
                failures=int(_csv_float(row.get("Failure Count"))),
                rps=_csv_float(row.get("Requests/s")),
                p50_ms=_csv_float(row.get("50%")),
                p95_ms=_csv_float(row.get("95%")),
                p99_ms=_csv_float(row.get("99%")),
            )
            if not row.get("Type") and row.get("Name") == "Aggregated":
                aggregated = stats
            else:
                rows.append(stats)
    if aggregated is None:
        raise ValueError(f"{path}: no Aggregated row")
    return aggregated, tuple(rows)


def parse_failures_csv(path: Path, limit: int = MAX_ERRORS) -> tuple[FailureReason, ...]:
    """The most frequent failure reasons from locust_failures.csv (counts may lag by up to a second)."""
    path = Path(path)
    if not path.is_file():
        return ()
    with path.open(newline="", encoding="utf-8") as fh:
        reasons = [
            FailureReason(
                name=_display_name(row.get("Method"), row.get("Name") or ""),
                error=(row.get("Error") or "").strip(),
                occurrences=int(_csv_float(row.get("Occurrences"))),
            )
            for row in csv.DictReader(fh)
        ]
    reasons.sort(key=lambda r: -r.occurrences)
    return tuple(reasons[:limit])


def _locust_version() -> str | None:
    try:
        return importlib.metadata.version("locust")
    except importlib.metadata.PackageNotFoundError:
        return None


def run_locust(settings: BenchSettings, on_output: OutputCallback | None = None) -> BenchResult:
    """Run Locust headless against settings.target and return what it measured.

    Failed requests (Locust then exits 1) are part of the result, not an error.
    Raises BenchError when Locust is missing, produces no stats, makes no
    requests, or overruns duration + TIMEOUT_GRACE_S (it is then killed).
    KeyboardInterrupt stops Locust and is re-raised.
    """
    # find_spec locates the package without importing it: importing locust
    # here would monkey-patch threading under Fabric.
    if importlib.util.find_spec("locust") is None:
        raise BenchError(f"Locust is not installed for {sys.executable}: pip install locust")
    locustfile = settings.locustfile.resolve()
    if not locustfile.is_file():
        raise BenchError(f"locustfile not found: {locustfile}")
    results_dir = settings.results_dir.resolve()
    results_dir.mkdir(parents=True, exist_ok=True)
    paths = output_paths(results_dir)
    # Leftovers from an earlier run in the same directory must not pass for this run's stats.
    for stale in paths.values():
        stale.unlink(missing_ok=True)

    cmd = locust_command(settings)
    started_at = _utcnow()
    # cwd=results_dir also keeps Locust from picking up a locust.conf or
    # pyproject.toml [tool.locust] from wherever the lab tool was started.
    returncode, stderr_tail = _run(cmd, results_dir, settings.duration_s + TIMEOUT_GRACE_S, on_output, settings.extra_env)
    finished_at = _utcnow()

    if returncode < 0:
        raise _with_gist(f"locust was killed by signal {-returncode}", stderr_tail)
    if paths["locust_json"].is_file():
        aggregated, per_endpoint = parse_stats_json(paths["locust_json"])
    else:
        try:
            aggregated, per_endpoint = parse_stats_csv(paths["csv_stats"])
        except (OSError, ValueError):
            raise _with_gist(f"locust exited with code {returncode} and wrote no stats", stderr_tail) from None
        if on_output is not None:
            on_output("lab: locust.json missing; stats come from the CSV snapshot and may miss the last second")
    if aggregated.requests == 0:
        what = f"locust made no requests against {settings.target} in {settings.duration_s} s"
        # Exit code 0 means the users simply sent nothing; anything else has a reason in stderr.
        raise BenchError(what) if returncode == 0 else _with_gist(f"{what} (exit code {returncode})", stderr_tail)
    if returncode not in (0, 1) and on_output is not None:
        on_output(f"lab: locust exited with code {returncode}; its stats are reported anyway")

    files = {key: path for key, path in paths.items() if key == "json" or path.is_file()}
    result = BenchResult(
        requests=aggregated.requests,
        failures=aggregated.failures,
        rps=aggregated.rps,
        p50_ms=aggregated.p50_ms,
        p95_ms=aggregated.p95_ms,
        p99_ms=aggregated.p99_ms,
        failure_ratio=aggregated.failures / aggregated.requests,
        per_endpoint=per_endpoint,
        files=files,
        errors=parse_failures_csv(paths["csv_failures"]),
    )
    write_atomically(
        paths["json"],
        json.dumps({
            "settings": settings_to_dict(settings),
            "result": result_to_dict(result),
            "locust": {"version": _locust_version(), "exit_code": returncode, "command": cmd},
            "started_at": started_at.isoformat(timespec="seconds"),
            "finished_at": finished_at.isoformat(timespec="seconds"),
        }, indent=2) + "\n",
        mode=0o644,  # a result for anyone to read, as Locust's own files beside it
    )
    return result
