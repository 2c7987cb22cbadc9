"""Locust in a child process for `lab bench`: one process per configuration, its per-second window file read back.

One Locust process lives across a configuration's warm-up and all its repeats, so signed-in customers log in once;
loadtests/lab_window.py (loaded with the locustfile) writes per-second successes, failures, a latency histogram,
stale reads and requests per web host. Every figure of a repeat is cut from the same seconds of that file
(`window_figures`), never from Locust's whole-run totals, which count logins and ramp-up in.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
import os
import queue
import re
import signal
import socket
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

LOOPBACK = "127.0.0.1"
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
    generator_prefix: tuple[str, ...] = ()  # e.g. taskset: Locust on the load generator's own CPUs
    master_bind_host: str | None = None  # remote workers on loadgen hosts: the master listens here ...
    expect_workers: int = 0  # ... for this many of them
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
        "csv_exceptions": results_dir / f"{CSV_PREFIX}_exceptions.csv",
        "window": results_dir / "window.jsonl",  # per second, written by loadtests/lab_window.py
        "control": results_dir / "control",  # run | pause | stop, read by loadtests/lab_window.py
        # --json-file appends ".json" to the name it is given.
        "locust_json": results_dir / f"{CSV_PREFIX}.json",
        "json": results_dir / "results.json",
        "log": results_dir / "locust.log",  # what Locust said (both streams), for a run to be read afterwards
    }


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 now (the kernel's pick), for a local Locust master."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def locust_command(settings: BenchSettings) -> list[str]:
    """The argv that runs Locust for these settings (paths made absolute: Locust runs in results_dir)."""
    results_dir = settings.results_dir.resolve()
    if settings.master_bind_host:
        distributed = ["--master", "--master-bind-host", settings.master_bind_host,
                       "--expect-workers", str(settings.expect_workers)]
    elif settings.processes > 1:
        # Locust's master and the workers it forks talk over a port: a free one on loopback, not Locust's default
        # 5557 on every address, which another Locust on this machine (another lab's bench, a test) may hold.
        port = str(free_loopback_port())
        distributed = ["--processes", str(settings.processes), "--master-bind-host", LOOPBACK, "--master-bind-port", port,
                       "--master-host", LOOPBACK, "--master-port", port]
    else:
        distributed = []
    return [
        *settings.generator_prefix,
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
        "--json-file",
        str(results_dir / CSV_PREFIX),
        "--only-summary",
        *distributed,
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


class LocustSession:
    """One Locust process run by the bench's own thread: started, paused, resumed and stopped through its control file.

    `wait(seconds)` streams Locust's output meanwhile and raises BenchError when Locust dies early. Leaving the
    `with` block (also by Ctrl-C) stops Locust: "stop" in the control file, then SIGTERM, then SIGKILL.
    """

    def __init__(self, settings: BenchSettings, on_output: OutputCallback | None = None) -> None:
        self.settings = settings
        self.on_output = on_output
        self.paths = output_paths(settings.results_dir.resolve())
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._log: IO[str] | None = None
        self._lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self._open_streams = 0
        self.proc: subprocess.Popen[str] | None = None
        self.returncode: int | None = None

    def __enter__(self) -> "LocustSession":
        # find_spec locates the package without importing it: importing locust here would monkey-patch threading
        # under Fabric.
        if importlib.util.find_spec("locust") is None:
            raise BenchError(f"Locust is not installed for {sys.executable}: pip install locust")
        if not self.settings.locustfile.resolve().is_file():
            raise BenchError(f"locustfile not found: {self.settings.locustfile.resolve()}")
        self.paths["window"].parent.mkdir(parents=True, exist_ok=True)
        for stale in self.paths.values():  # leftovers of an earlier run must not pass for this one's
            stale.unlink(missing_ok=True)
        self.control("run")
        env = {**self.settings.extra_env, "LAB_WINDOW_FILE": str(self.paths["window"]),
               "LAB_CONTROL_FILE": str(self.paths["control"])}
        self.proc = subprocess.Popen(
            locust_command(self.settings), cwd=self.paths["window"].parent, env=_child_env(env),
            # Not a tty, so Locust's keyboard listener stays off and leaves the terminal alone.
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
            # Own process group: Ctrl-C reaches only us, and we stop Locust deliberately.
            start_new_session=True,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        for tag, stream in (("out", self.proc.stdout), ("err", self.proc.stderr)):
            threading.Thread(target=_pump, args=(stream, tag, self._lines), daemon=True).start()
        self._open_streams = 2
        self._log = open(self.paths["log"], "a", encoding="utf-8")
        return self

    def control(self, state: str) -> None:
        """run, pause (users hold between requests: wrk measures alone) or stop."""
        write_atomically(self.paths["control"], state + "\n", mode=0o644)

    def _drain(self, timeout: float) -> None:
        try:
            tag, line = self._lines.get(timeout=timeout)
        except queue.Empty:
            return
        if line is None:
            self._open_streams -= 1
            return
        if tag == "err":
            self.stderr_tail.append(line)
        if self._log is not None:
            self._log.write(line + "\n")
        if self.on_output is not None:
            self.on_output(line)

    def wait(self, seconds: float) -> None:
        """Let the load run for this long, streaming Locust's output; BenchError if Locust stops meanwhile."""
        assert self.proc is not None
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            self._drain(min(remaining, 0.2))
            if self.proc.poll() is not None:
                raise _with_gist(f"locust stopped early (exit code {self.proc.returncode})", self.stderr_tail)

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by Locust: its process group (the master and any local worker processes)."""
        if self.proc is None:
            return 0.0
        return process_group_cpu_seconds(self.proc.pid)

    def stop(self) -> int:
        """Ask Locust to quit (it writes its last seconds), wait for it; the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.control("stop")
            deadline = time.monotonic() + STOP_TIMEOUT_S + TERM_WAIT_S
            while self.proc.poll() is None and time.monotonic() < deadline:
                self._drain(0.2)
        _stop(self.proc)  # SIGTERM, then SIGKILL: a Locust that ignored "stop"
        deadline = time.monotonic() + TERM_WAIT_S  # the pumps end once Locust's pipes close
        while self._open_streams > 0 and time.monotonic() < deadline:
            self._drain(0.2)
        self.returncode = self.proc.returncode
        return self.returncode

    def __exit__(self, *exc_info: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            _stop(self.proc)  # KeyboardInterrupt or an error on our side: never leave Locust running behind us
        for stream in (self.proc.stdout, self.proc.stderr) if self.proc else ():
            if stream:
                stream.close()
        if self._log is not None:
            self._log.close()
            self._log = None


def process_group_cpu_seconds(group: int) -> float:
    """User + system CPU seconds of every live process in a process group, from /proc (Linux)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended meanwhile
        # After the command name: state ppid pgrp ...; utime and stime are fields 14 and 15 of the whole line.
        if int(fields[2]) == group:
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


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


def _locust_version() -> str | None:
    try:
        return importlib.metadata.version("locust")
    except importlib.metadata.PackageNotFoundError:
        return None




# A repeat whose steady state (every user signed in, no start-up request left) covers less than this share of its
# duration gives no figure: it is "did not settle", with the reason.
SETTLED_SHARE = 0.5

# Whole seconds in a row in which no request finished at all, every user signed in: a stall (every request held
# somewhere). A window with one measures the stall, not the configuration, so it gives no figure either. The bound
# grows with the window's median latency, so a slow but flowing closed loop (few users, seconds per request) is no
# stall; a single empty second is a real zero (counted).
STALL_MIN_S = 3
STALL_LATENCIES = 3


@dataclass(frozen=True)
class Window:
    """Every figure of one measured repeat, all from the same whole seconds of the window file."""

    settled: bool
    reason: str  # why it did not settle; "" when it did
    seconds: int  # steady seconds counted
    requests: int  # successful ones
    failures: int
    rps: float  # successful requests per second
    p50_ms: float
    p95_ms: float
    p99_ms: float
    failure_pct: float
    stale: int  # reads after a confirmed transfer that did not show it
    checked: int  # reads after a confirmed transfer
    hosts: dict[str, int]  # responses per web host (X-Served-By), "(balancer)" for nginx's own
    errors: list[tuple[str, int]]  # the most frequent failures
    timeline: list[tuple[float, float, float]]  # (seconds into the window, successful req/s, p95 ms) per second


def read_window(path: Path) -> list[dict[str, Any]]:
    """The window file's seconds in order; a second written twice (a late worker report) is summed into one."""
    merged: dict[int, dict[str, Any]] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        if not line.strip():
            continue
        second = json.loads(line)
        into = merged.setdefault(int(second["t"]), {"t": int(second["t"]), "ok": 0, "fail": 0, "hist": {}, "errors": {},
                                                    "hosts": {}, "stale": 0, "checked": 0, "ready": 0, "starts": 0})
        for key in ("ok", "fail", "stale", "checked", "ready", "starts"):
            into[key] += int(second.get(key, 0))
        for key in ("hist", "errors", "hosts"):
            for name, value in second.get(key, {}).items():
                into[key][name] = into[key].get(name, 0) + int(value)
    return [merged[t] for t in sorted(merged)]


def histogram_percentile(histogram: Mapping[Any, int], percent: float) -> float:
    """The smallest bucket (ms) at or below which `percent` of the timed requests fall; nan without any."""
    total = sum(histogram.values())
    if not total:
        return math.nan
    seen = 0
    for bucket in sorted(histogram, key=float):
        seen += histogram[bucket]
        if seen >= percent * total:
            return float(bucket)
    return float(max(histogram, key=float))


def ready_at(seconds: list[dict[str, Any]], users: int) -> int | None:
    """The second by which every user had finished its start-up (signed in), or None if some never did."""
    signed_in = 0
    for second in seconds:
        signed_in += second["ready"]
        if signed_in >= users:
            return second["t"]
    return None


def window_figures(seconds: list[dict[str, Any]], start: float, end: float, users: int,
                   settled_share: float = SETTLED_SHARE) -> Window:
    """The repeat that ran from `start` to `end` (epoch seconds): its steady whole seconds and every figure from them.

    The steady state begins once every user is signed in and the last start-up request is done; a second without
    a line had no request finish in it (a real zero, counted).
    """
    low, high = math.ceil(start), math.floor(end)  # whole seconds only: a partial second would read as a dip
    span = max(high - low, 0)
    everyone = ready_at(seconds, users)
    last_start = max((s["t"] for s in seconds if s["starts"] and s["t"] < high), default=None)
    steady_from = max(low, everyone + 1 if everyone is not None else high, last_start + 1 if last_start is not None else low)
    steady = [s for s in seconds if steady_from <= s["t"] < high]
    length = max(high - steady_from, 0)
    reason = ""
    if everyone is None or everyone >= high:
        signed_in = sum(s["ready"] for s in seconds if s["t"] < high)
        reason = f"logins still running: {signed_in} of {users} users signed in by the end of the run"
    elif length < settled_share * span or length < 1:
        reason = (f"steady for only {length} s of {span} s (start-up requests until {max(steady_from - low, 0)} s in); "
                  f"at least {settled_share:.0%} needed")
    ok = sum(s["ok"] for s in steady)
    failed = sum(s["fail"] for s in steady)
    if not reason and not ok + failed:
        reason = "no request finished in the steady state"
    histogram, errors, hosts = _summed(steady, "hist"), _summed(steady, "errors"), _summed(steady, "hosts")
    if not reason:
        stall = longest_stall(steady, steady_from, high)
        median_s = histogram_percentile(histogram, 0.50) / 1000
        if stall and stall[1] >= max(STALL_MIN_S, STALL_LATENCIES * (median_s if math.isfinite(median_s) else 0)):
            reason = (f"a stall: no request finished for {stall[1]} s, from {stall[0] - low} s into the run "
                      f"(median latency otherwise {median_s * 1000:,.0f} ms)")
    by_second = {s["t"]: s for s in steady}
    timeline = [(float(t - steady_from), float(by_second[t]["ok"]) if t in by_second else 0.0,
                 histogram_percentile(by_second[t]["hist"], 0.95) if t in by_second and by_second[t]["hist"] else 0.0)
                for t in range(steady_from, high)]
    settled = not reason
    return Window(
        settled=settled, reason=reason, seconds=length, requests=ok, failures=failed,
        rps=ok / length if settled else math.nan,
        p50_ms=histogram_percentile(histogram, 0.50) if settled else math.nan,
        p95_ms=histogram_percentile(histogram, 0.95) if settled else math.nan,
        p99_ms=histogram_percentile(histogram, 0.99) if settled else math.nan,
        failure_pct=100 * failed / (ok + failed) if settled else math.nan,
        stale=sum(s["stale"] for s in steady), checked=sum(s["checked"] for s in steady), hosts=hosts,
        errors=sorted(errors.items(), key=lambda item: -item[1])[:MAX_ERRORS], timeline=timeline if settled else [],
    )


def longest_stall(steady: list[dict[str, Any]], start: int, end: int) -> tuple[int, int] | None:
    """(first second, length) of the longest run of seconds in [start, end) in which no request finished."""
    finished = {s["t"] for s in steady if s["ok"] + s["fail"]}
    longest, run_from = None, None
    for t in range(start, end + 1):
        if t < end and t not in finished:
            run_from = t if run_from is None else run_from
            continue
        if run_from is not None and (longest is None or t - run_from > longest[1]):
            longest = (run_from, t - run_from)
        run_from = None
    return longest


def _summed(seconds: list[dict[str, Any]], key: str) -> dict[str, int]:
    into: dict[str, int] = {}
    for second in seconds:
        for name, value in second[key].items():
            into[name] = into.get(name, 0) + value
    return into


def signed_in(path: Path) -> int:
    """How many users have finished their start-up so far (the window file lags a few seconds behind)."""
    return sum(second["ready"] for second in read_window(path))
