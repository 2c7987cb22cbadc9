"""Unit tests for lab.bench.locust: real Locust runs against a loopback HTTP server, no lab needed."""
from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from lab.bench import locust as adapter
from lab.bench.locust import (
    BenchResult,
    BenchSettings,
    parse_failures_csv,
    parse_stats_csv,
    parse_stats_json,
    result_to_dict,
    run_locust,
    timestamped_results_dir,
)
from lab.errors import BenchError, LabError

REPO = Path(__file__).resolve().parents[1]
MIX = REPO / "loadtests" / "locustfile.py"
HELLO = REPO / "loadtests" / "hello.py"
# Captured from one real run: loadtests/locustfile.py, 5 users, 3 s, against a
# server like the one below with /report/ answering 500. The expected numbers
# come from Locust's own report.html of that run, so they check our parsing
# against Locust rather than against ourselves.
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "bench"

SITE_PATHS = ("/", "/balance/", "/report/", "/hello/", "/static/accounts/site.css")
MIX_NAMES = {
    "GET / (home)",
    "GET /balance/ (db, cached)",
    "GET /report/ (db)",
    "GET /hello/ (no db)",
    "GET /static/accounts/site.css (nginx)",
}


class _SiteHandler(http.server.BaseHTTPRequestHandler):
    # Keep-alive, as nginx does, so FastHttpUser reuses its connections.
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        failing: frozenset[str] = self.server.failing  # type: ignore[attr-defined]
        if path in failing:
            status, body = 500, b"boom"
        elif path in SITE_PATHS:
            status, body = 200, b"body { color: black; }" if path.endswith(".css") else b"<html>ok</html>"
        else:
            status, body = 404, b"not found"
        self.send_response(status)
        self.send_header("Content-Type", "text/css" if path.endswith(".css") else "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve(failing: frozenset[str]) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SiteHandler)
    server.daemon_threads = True
    server.failing = failing  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    yield from _serve(frozenset())


@pytest.fixture(scope="module")
def failing_site() -> Iterator[str]:
    yield from _serve(frozenset({"/report/"}))


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _settings(target: str, results_dir: Path, locustfile: Path = MIX, users: int = 5, duration_s: int = 3) -> BenchSettings:
    return BenchSettings(
        target=target,
        users=users,
        spawn_rate=float(users),
        duration_s=duration_s,
        locustfile=locustfile,
        results_dir=results_dir,
    )


@pytest.fixture(scope="module")
def mix_run(site: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[BenchSettings, BenchResult, list[str]]:
    settings = _settings(site, tmp_path_factory.mktemp("mix") / "run")
    lines: list[str] = []
    return settings, run_locust(settings, on_output=lines.append), lines


def _assert_sane(result: BenchResult) -> None:
    assert result.requests > 0
    assert result.rps > 0
    assert 0 <= result.p50_ms <= result.p95_ms <= result.p99_ms
    assert 0 <= result.failures <= result.requests
    assert result.failure_ratio == pytest.approx(result.failures / result.requests)
    assert sum(row.requests for row in result.per_endpoint) == result.requests
    assert sum(row.failures for row in result.per_endpoint) == result.failures
    for row in result.per_endpoint:
        assert 0 <= row.p50_ms <= row.p95_ms <= row.p99_ms


# --- parsing the captured fixture -------------------------------------------


def test_json_fixture_matches_locusts_own_report() -> None:
    total, rows = parse_stats_json(FIXTURES / "locust.json")
    assert (total.requests, total.failures, total.p50_ms, total.p95_ms, total.p99_ms) == (43, 5, 1, 4, 5)
    # Locust divides by its own start time, a few ms before the first request.
    assert total.rps == pytest.approx(15.687, rel=0.01)
    by_name = {row.name: row for row in rows}
    assert set(by_name) == MIX_NAMES
    assert (by_name["GET /report/ (db)"].requests, by_name["GET /report/ (db)"].failures) == (5, 5)
    assert (by_name["GET /balance/ (db, cached)"].requests, by_name["GET /balance/ (db, cached)"].p95_ms) == (14, 4)
    assert by_name["GET /static/accounts/site.css (nginx)"].p99_ms == 5


def test_csv_fixture_parses_the_aggregated_row() -> None:
    total, rows = parse_stats_csv(FIXTURES / "locust_stats.csv")
    assert (total.name, total.requests, total.failures) == ("Aggregated", 31, 4)
    assert (total.p50_ms, total.p95_ms, total.p99_ms) == (1, 4, 5)
    assert total.rps == pytest.approx(15.527, rel=0.001)
    assert {row.name for row in rows} == MIX_NAMES
    assert sum(row.requests for row in rows) == total.requests


def test_csv_snapshot_lags_the_json() -> None:
    # Why run_locust reads locust.json: Locust rewrites the CSV once a second
    # and not at shutdown, so the CSV of the same run has fewer requests.
    from_csv, _ = parse_stats_csv(FIXTURES / "locust_stats.csv")
    from_json, _ = parse_stats_json(FIXTURES / "locust.json")
    assert from_csv.requests < from_json.requests


def test_failures_fixture() -> None:
    (reason,) = parse_failures_csv(FIXTURES / "locust_failures.csv")
    assert reason.name == "GET /report/ (db)"
    assert "500" in reason.error
    assert reason.occurrences == 4


def test_csv_without_aggregated_row_is_rejected(tmp_path: Path) -> None:
    stats = tmp_path / "locust_stats.csv"
    stats.write_text("Type,Name,Request Count,Failure Count\n", encoding="utf-8")
    with pytest.raises(ValueError):
        parse_stats_csv(stats)


# --- real runs ------------------------------------------------------------------


def test_mix_run_numbers_are_sane(mix_run: tuple[BenchSettings, BenchResult, list[str]]) -> None:
    _, result, _ = mix_run
    _assert_sane(result)
    assert result.failures == 0
    assert result.errors == ()
    assert {row.name for row in result.per_endpoint} <= MIX_NAMES
    # The weights make these the two most requested; in 3 s with 5 users they always appear.
    assert {"GET / (home)", "GET /balance/ (db, cached)"} <= {row.name for row in result.per_endpoint}


def test_mix_run_writes_its_files(mix_run: tuple[BenchSettings, BenchResult, list[str]]) -> None:
    settings, result, _ = mix_run
    for key in ("csv_stats", "html", "json"):
        assert result.files[key].is_file(), key
        assert result.files[key].parent == settings.results_dir.resolve()
    saved = json.loads(result.files["json"].read_text(encoding="utf-8"))
    assert saved["settings"]["users"] == settings.users
    assert saved["settings"]["target"] == settings.target
    assert saved["result"]["requests"] == result.requests
    assert saved["result"] == json.loads(json.dumps(result_to_dict(result)))
    assert saved["locust"]["exit_code"] == 0


def test_mix_run_streams_locust_output(mix_run: tuple[BenchSettings, BenchResult, list[str]]) -> None:
    _, _, lines = mix_run
    assert any("Starting Locust" in line for line in lines)
    assert all("\n" not in line for line in lines)


def test_locust_never_imported_here(mix_run: tuple[BenchSettings, BenchResult, list[str]]) -> None:
    # gevent's monkey-patching would break Fabric's threads in this process.
    assert "locust" not in sys.modules
    assert "gevent" not in sys.modules


def test_rerun_in_same_dir_does_not_reuse_old_stats(site: str, tmp_path: Path) -> None:
    results_dir = tmp_path / "run"
    results_dir.mkdir()
    (results_dir / "locust.json").write_text("[]", encoding="utf-8")
    (results_dir / "results.json").write_text("{}", encoding="utf-8")
    result = run_locust(_settings(site, results_dir, HELLO, users=1, duration_s=1))
    assert result.requests > 0
    assert json.loads((results_dir / "results.json").read_text(encoding="utf-8"))["result"]["requests"] == result.requests


def test_server_errors_are_failures_not_exceptions(
    failing_site: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No think time: enough /report/ requests that the failures CSV surely lists them.
    monkeypatch.setenv("LAB_WAIT", "0")
    result = run_locust(_settings(failing_site, tmp_path / "run"))
    _assert_sane(result)
    by_name = {row.name: row for row in result.per_endpoint}
    report = by_name["GET /report/ (db)"]
    assert report.failures == report.requests > 0
    assert result.failures == report.failures
    assert 0 < result.failure_ratio < 1
    assert any("500" in reason.error for reason in result.errors)
    assert json.loads(result.files["json"].read_text(encoding="utf-8"))["locust"]["exit_code"] == 1


def test_unreachable_target_is_a_result_with_every_request_failed(tmp_path: Path) -> None:
    # Decision: Locust did make requests and every one failed; that is a
    # measurement (failure_ratio 1.0, with the reason), not a crash. Callers
    # that want a hard stop check failure_ratio.
    result = run_locust(_settings(f"http://127.0.0.1:{_closed_port()}", tmp_path / "run", users=2, duration_s=2))
    assert result.requests > 0
    assert result.failures == result.requests
    assert result.failure_ratio == 1.0
    assert result.errors
    assert any("refused" in reason.error.lower() for reason in result.errors)


def test_hello_scenario_only_hits_hello(site: str, tmp_path: Path) -> None:
    result = run_locust(_settings(site, tmp_path / "run", HELLO, users=2, duration_s=2))
    _assert_sane(result)
    assert [row.name for row in result.per_endpoint] == ["GET /hello/ (no db)"]


# --- errors ---------------------------------------------------------------------


def test_bad_lab_wait_is_a_one_line_bench_error(site: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_WAIT", "soon")
    with pytest.raises(BenchError) as caught:
        run_locust(_settings(site, tmp_path / "run", duration_s=1))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("locust exited with code 1 and wrote no stats: ValueError: LAB_WAIT must be")
    assert isinstance(caught.value, LabError)


def test_no_requests_is_a_bench_error(site: str, tmp_path: Path) -> None:
    idle = tmp_path / "idle.py"
    idle.write_text(
        '"""A user that never sends a request."""\n'
        "from locust import User, constant, task\n\n\n"
        "class Idle(User):\n"
        "    wait_time = constant(0.2)\n\n"
        "    @task\n"
        "    def nothing(self) -> None:\n"
        "        pass\n",
        encoding="utf-8",
    )
    with pytest.raises(BenchError, match="no requests"):
        run_locust(_settings(site, tmp_path / "run", idle, users=1, duration_s=1))


def test_task_crash_without_requests_names_the_exception(site: str, tmp_path: Path) -> None:
    crashing = tmp_path / "crashing.py"
    crashing.write_text(
        '"""A user whose only task raises before sending anything."""\n'
        "from locust import User, constant, task\n\n\n"
        "class Crashing(User):\n"
        "    wait_time = constant(0.2)\n\n"
        "    @task\n"
        "    def explode(self) -> None:\n"
        "        raise RuntimeError('scenario is broken')\n",
        encoding="utf-8",
    )
    with pytest.raises(BenchError) as caught:
        run_locust(_settings(site, tmp_path / "run", crashing, users=1, duration_s=1))
    assert str(caught.value).endswith("(exit code 1): RuntimeError: scenario is broken")


def test_gist_picks_the_telling_line() -> None:
    traceback_tail = [
        "[2026-01-01 00:00:00,000] vm/INFO/locust.main: Starting Locust 2.47.0",
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in <module>',
        "ValueError: LAB_WAIT must be a number of seconds >= 0, got 'soon'",
        "",
    ]
    assert adapter._gist(traceback_tail) == "ValueError: LAB_WAIT must be a number of seconds >= 0, got 'soon'"
    logged = [
        "[2026-01-01 00:00:00,000] vm/INFO/locust.main: Starting Locust 2.47.0",
        "[2026-01-01 00:00:00,001] vm/ERROR/locust.main: No User class found!",
    ]
    assert adapter._gist(logged) == "No User class found!"
    assert adapter._gist([]) == ""
    assert adapter._gist(["[2026-01-01 00:00:00,000] vm/INFO/locust.main: Shutting down (exit code 1)"]) == ""


def test_missing_locustfile(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="locustfile not found"):
        run_locust(_settings("http://127.0.0.1:1", tmp_path / "run", tmp_path / "nope.py"))


def test_missing_locust(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = adapter.importlib.util.find_spec
    monkeypatch.setattr(
        adapter.importlib.util, "find_spec", lambda name, *a: None if name == "locust" else real_find_spec(name, *a)
    )
    with pytest.raises(BenchError, match="not installed"):
        run_locust(_settings("http://127.0.0.1:1", tmp_path / "run"))


@pytest.mark.parametrize(
    "change",
    [{"users": 0}, {"duration_s": 0}, {"spawn_rate": 0.0}, {"target": "192.168.56.11"}],
)
def test_settings_are_validated(change: dict[str, object], tmp_path: Path) -> None:
    values: dict[str, object] = dict(
        target="http://127.0.0.1", users=1, spawn_rate=1.0, duration_s=1, locustfile=MIX, results_dir=tmp_path
    )
    values.update(change)
    with pytest.raises(BenchError):
        BenchSettings(**values)  # type: ignore[arg-type]


class _PopenSpy:
    """Wraps subprocess.Popen in lab.bench.locust to keep hold of the process it starts."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        real = subprocess.Popen

        def spy(*args: object, **kwargs: object) -> subprocess.Popen[str]:
            proc = real(*args, **kwargs)  # type: ignore[call-overload]
            self.procs.append(proc)
            return proc

        monkeypatch.setattr(adapter.subprocess, "Popen", spy)


def test_overrun_is_killed_and_reported(site: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = _PopenSpy(monkeypatch)
    # A 1 s run with a 0.5 s hard limit: the limit always hits first.
    monkeypatch.setattr(adapter, "TIMEOUT_GRACE_S", -0.5)
    with pytest.raises(BenchError, match="did not finish"):
        run_locust(_settings(site, tmp_path / "run", HELLO, users=1, duration_s=1))
    (proc,) = spy.procs
    assert proc.returncode is not None


def test_ctrl_c_stops_locust_and_is_reraised(site: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = _PopenSpy(monkeypatch)

    def interrupt(line: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_locust(_settings(site, tmp_path / "run", HELLO, users=1, duration_s=3), on_output=interrupt)
    (proc,) = spy.procs
    assert proc.returncode is not None


# --- results directories --------------------------------------------------------


def test_timestamped_results_dir_never_collides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adapter, "_utcnow", lambda: datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc))
    made = [timestamped_results_dir(tmp_path) for _ in range(3)]
    assert [p.name for p in made] == ["20240506-070809", "20240506-070809-2", "20240506-070809-3"]
    assert all(p.parent == tmp_path / "results" and p.is_dir() for p in made)


def test_timestamped_results_dir_uses_utc(tmp_path: Path) -> None:
    before = datetime.now(timezone.utc).replace(microsecond=0)
    made = timestamped_results_dir(tmp_path)
    stamp = datetime.strptime(made.name[:15], "%Y%m%d-%H%M%S").replace(tzinfo=timezone.utc)
    assert abs((stamp - before).total_seconds()) <= 2
