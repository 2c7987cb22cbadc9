"""Unit tests for lab.bench.locust and loadtests/: real Locust sessions against a loopback HTTP server, no lab needed."""
from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from lab.bench import locust as adapter
from lab.bench.locust import (
    BenchSettings,
    LocustSession,
    parse_stats_json,
    process_group_cpu_seconds,
    read_window,
    signed_in,
    timestamped_results_dir,
    window_figures,
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
        if not path.endswith(".css"):  # as the site does; nginx's own static files carry no such header
            self.send_header("X-Served-By", "web1")
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


def _settings(target: str, results_dir: Path, locustfile: Path = MIX, users: int = 5, duration_s: int = 60) -> BenchSettings:
    return BenchSettings(target=target, users=users, spawn_rate=float(users), duration_s=duration_s,
                         locustfile=locustfile, results_dir=results_dir, extra_env={"LAB_WAIT": "0"})


def _measure(settings: BenchSettings, seconds: float = 4, warmup: float = 2, lines: list[str] | None = None,
             pause: float = 0) -> tuple[list[dict], float, float, float, float]:
    """One session: warm-up, optionally a pause, then `seconds` measured; (window seconds, start, end, pause from, to)."""
    with LocustSession(settings, on_output=None if lines is None else lines.append) as session:
        session.wait(warmup)
        limit = time.monotonic() + 30  # as the bench does: the warm-up lasts until every user has started
        while signed_in(session.paths["window"]) < settings.users and time.monotonic() < limit:
            session.wait(1)
        paused_from = paused_to = 0.0
        if pause:
            session.control("pause")
            paused_from = time.time()
            session.wait(pause)
            paused_to = time.time()
            session.control("run")
        start = time.time()
        session.wait(seconds)
        end = time.time()
        assert session.stop() in (0, 1)
    return read_window(session.paths["window"]), start, end, paused_from, paused_to


@pytest.fixture(scope="module")
def mix_run(site: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], float, float, list[str]]:
    lines: list[str] = []
    seconds, start, end, _, _ = _measure(_settings(site, tmp_path_factory.mktemp("mix") / "run"), lines=lines)
    return seconds, start, end, lines


# --- parsing the captured fixture (Locust's own whole-run stats, as test_integration_rolling reads them) ---------


def test_json_fixture_matches_locusts_own_report() -> None:
    total, rows = parse_stats_json(FIXTURES / "locust.json")
    assert (total.requests, total.failures, total.p50_ms, total.p95_ms, total.p99_ms) == (43, 5, 1, 4, 5)
    # Locust divides by its own start time, a few ms before the first request.
    assert total.rps == pytest.approx(15.687, rel=0.01)
    by_name = {row.name: row for row in rows}
    assert set(by_name) == MIX_NAMES


# --- real sessions ---------------------------------------------------------------


def test_mix_window_figures_are_sane(mix_run: tuple[list[dict], float, float, list[str]]) -> None:
    seconds, start, end, _ = mix_run
    window = window_figures(seconds, start, end, users=5)
    assert window.settled, window.reason
    assert window.requests > 0 and window.rps > 0 and window.failures == 0
    assert 0 <= window.p50_ms <= window.p95_ms <= window.p99_ms
    # Every page the loopback site makes says X-Served-By: web1; its stylesheet (as nginx's) says nothing.
    assert set(window.hosts) == {"web1", "(balancer)"}
    assert sum(window.hosts.values()) == window.requests


def test_every_user_signs_in_once(mix_run: tuple[list[dict], float, float, list[str]]) -> None:
    seconds, _, _, _ = mix_run
    assert sum(s["ready"] for s in seconds) == 5


def test_session_streams_locust_output(mix_run: tuple[list[dict], float, float, list[str]]) -> None:
    _, _, _, lines = mix_run
    assert any("Starting Locust" in line for line in lines)
    assert all("\n" not in line for line in lines)


def test_locust_never_imported_here(mix_run: tuple[list[dict], float, float, list[str]]) -> None:
    # gevent's monkey-patching would break Fabric's threads in this process.
    assert "locust" not in sys.modules
    assert "gevent" not in sys.modules


def test_paused_users_send_nothing(site: str, tmp_path: Path) -> None:
    seconds, start, _, paused_from, paused_to = _measure(_settings(site, tmp_path / "run", HELLO, users=2), seconds=1, warmup=8,
                                                          pause=3)
    assert any(s["ok"] for s in seconds if s["t"] < int(paused_from))  # busy before
    # A second in which no request finished has no line: while paused (after the first second, which drains), none.
    assert not [s for s in seconds if paused_from + 1 <= s["t"] < int(paused_to) and s["ok"] + s["fail"]]
    assert any(s["ok"] for s in seconds if s["t"] >= int(start))  # and they come back


def test_server_errors_are_failures_and_not_throughput(failing_site: str, tmp_path: Path) -> None:
    seconds, start, end, _, _ = _measure(_settings(failing_site, tmp_path / "run"))
    window = window_figures(seconds, start, end, users=5)
    assert window.settled and window.failures > 0 and 0 < window.failure_pct < 100
    assert window.rps == pytest.approx(window.requests / window.seconds)  # the successful ones only
    assert any("/report/" in error and "500" in error for error, _ in window.errors)


def test_unreachable_target_gives_every_request_failed(tmp_path: Path) -> None:
    seconds, start, end, _, _ = _measure(_settings(f"http://127.0.0.1:{_closed_port()}", tmp_path / "run", HELLO, users=2))
    window = window_figures(seconds, start, end, users=2)
    assert window.rps == 0 and window.failure_pct == 100
    assert any("refused" in error.lower() for error, _ in window.errors)


def test_hello_scenario_only_hits_hello(site: str, tmp_path: Path) -> None:
    seconds, start, end, _, _ = _measure(_settings(site, tmp_path / "run", HELLO, users=2), seconds=2)
    window = window_figures(seconds, start, end, users=2)
    assert window.settled and window.hosts == {"web1": window.requests}


def test_locust_group_cpu_is_counted_while_it_runs(site: str, tmp_path: Path) -> None:
    with LocustSession(_settings(site, tmp_path / "run", HELLO, users=2)) as session:
        session.wait(2)
        assert session.proc is not None
        assert 0 < session.cpu_seconds() == pytest.approx(process_group_cpu_seconds(session.proc.pid), abs=0.5)
        session.stop()


# --- errors ---------------------------------------------------------------------


def test_bad_lab_wait_is_a_one_line_bench_error(site: str, tmp_path: Path) -> None:
    settings = BenchSettings(site, 1, 1.0, 10, MIX, tmp_path / "run", extra_env={"LAB_WAIT": "soon"})
    with pytest.raises(BenchError) as caught:
        with LocustSession(settings) as session:
            session.wait(10)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("locust stopped early (exit code 1): ValueError: LAB_WAIT must be")
    assert isinstance(caught.value, LabError)


def test_task_crash_names_the_exception(site: str, tmp_path: Path) -> None:
    crashing = tmp_path / "crashing.py"
    crashing.write_text(
        '"""A locustfile that cannot even load."""\n'
        "raise RuntimeError('scenario is broken')\n",
        encoding="utf-8",
    )
    with pytest.raises(BenchError, match="RuntimeError: scenario is broken"):
        with LocustSession(_settings(site, tmp_path / "run", crashing, users=1)) as session:
            session.wait(10)


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
        with LocustSession(_settings("http://127.0.0.1:1", tmp_path / "run", tmp_path / "nope.py")):
            pass


def test_missing_locust(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = adapter.importlib.util.find_spec
    monkeypatch.setattr(
        adapter.importlib.util, "find_spec", lambda name, *a: None if name == "locust" else real_find_spec(name, *a)
    )
    with pytest.raises(BenchError, match="not installed"):
        with LocustSession(_settings("http://127.0.0.1:1", tmp_path / "run")):
            pass


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


def test_ctrl_c_stops_locust_and_is_reraised(site: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = _PopenSpy(monkeypatch)

    def interrupt(line: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        with LocustSession(_settings(site, tmp_path / "run", HELLO, users=1), on_output=interrupt) as session:
            session.wait(10)
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


def test_worker_processes_ship_their_seconds_to_the_master(site: str, tmp_path: Path) -> None:
    settings = BenchSettings(site, 4, 4.0, 60, HELLO, tmp_path / "run", processes=2, extra_env={"LAB_WAIT": "0"})
    seconds, start, end, _, _ = _measure(settings, seconds=4, warmup=6)
    assert sum(s["ready"] for s in seconds) == 4  # users of both worker processes, counted once each
    window = window_figures(seconds, start, end, users=4)
    assert window.settled, window.reason
    assert window.requests > 0 and window.hosts == {"web1": window.requests}



def test_worker_processes_run_while_another_locust_holds_the_default_master_port(site: str, tmp_path: Path) -> None:
    """The fresh-machine run's failure: a loadgen bench's master held 5557 while this test's Locust bound *:5557."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other_master:
        try:
            other_master.bind(("0.0.0.0", 5557))
            other_master.listen()
        except OSError:
            pass  # already held by something else: the case under test
        settings = BenchSettings(site, 2, 2.0, 60, HELLO, tmp_path / "run", processes=2, extra_env={"LAB_WAIT": "0"})
        seconds, start, end, _, _ = _measure(settings, seconds=3, warmup=5)
    assert sum(s["ready"] for s in seconds) == 2
    assert window_figures(seconds, start, end, users=2).requests > 0

# --- over HTTPS: POSTs carry a Referer, a login paced by the balancer (429) is retried, not failed -------------------

class _BankHandler(http.server.BaseHTTPRequestHandler):
    """Just enough of the bank site for one customer's mix: the login (the first POSTs paced with 429 as nginx does),
    the transfer form, the redirect to /transfer/<pk>/ and the balance sheet. Records every POST's Referer."""

    protocol_version = "HTTP/1.1"
    form = '<form><input type="hidden" name="csrfmiddlewaretoken" value="tok"><input name="password"></form>'

    def _answer(self, status: int, body: str = "", location: str | None = None) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("X-Served-By", "web1")
        if location:
            self.send_header("Location", location)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/accounts/login/":
            self._answer(200, self.form)
        elif self.path == "/transfer/":
            self._answer(200, '<input type="hidden" name="csrfmiddlewaretoken" value="tok">'
                              '<option value="AC01001"></option><option value="AC01002"></option>')
        elif self.path.startswith("/transfer/"):
            self._answer(200, 'Transferred <p id="transfer-confirmation" data-transfer-id="7" data-from="AC01001" '
                              'data-from-balance="999.99" data-to="AC01002" data-to-balance="1000.01"></p>')
        elif self.path == "/balance/":
            self._answer(200, '<li data-account="AC01001" data-balance="999.99"></li>')
        else:
            self._answer(200, "<html>ok</html>")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        server = self.server
        server.referers.append((self.path, self.headers.get("Referer")))  # type: ignore[attr-defined]
        if self.path == "/accounts/login/":
            server.login_posts += 1  # type: ignore[attr-defined]
            server.login_times.append(time.monotonic())  # type: ignore[attr-defined]
            if server.login_posts <= 2:  # type: ignore[attr-defined]
                self._answer(429, "too many")
            else:
                self._answer(302, location="/")
        else:
            self._answer(302, location="/transfer/7/")

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_customers_send_referers_and_wait_out_429_on_login(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _BankHandler)
    server.daemon_threads = True
    server.referers, server.login_posts, server.login_times = [], 0, []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    target = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        settings = BenchSettings(target=target, users=1, spawn_rate=1.0, duration_s=60, locustfile=MIX,
                                 results_dir=tmp_path / "run", extra_env={"LAB_WAIT": "0", "LAB_DEMO_PASSWORD": "pw",
                                                                          "LAB_CUSTOMERS": "1"})
        with LocustSession(settings, on_output=None) as session:
            limit = time.monotonic() + 30
            while signed_in(session.paths["window"]) < 1 and time.monotonic() < limit:
                session.wait(1)
            session.wait(2)
            session.stop()
        seconds = read_window(session.paths["window"])
    finally:
        server.shutdown()
        server.server_close()
    assert server.login_posts >= 3  # type: ignore[attr-defined]  # two paced, then signed in
    times = server.login_times  # type: ignore[attr-defined]
    assert min(later - earlier for earlier, later in zip(times, times[1:3])) >= 0.25  # waited before trying again
    assert sum(s["ready"] for s in seconds) >= 1
    posts = server.referers  # type: ignore[attr-defined]
    assert any(path == "/transfer/" for path, _ in posts)
    assert all(referer == f"{target}{path}" for path, referer in posts)
    assert sum(s["fail"] for s in seconds) == 0  # the 429s were start-up, not failures
    assert sum(s["checked"] for s in seconds) >= 1 and sum(s["stale"] for s in seconds) == 0


_STALLING_WORKER = '''"""Test scenario: /hello/ back to back, each worker process frozen for {stall_s} s once (no heartbeat meanwhile)."""
import sys

from gevent.monkey import get_original

sys.path.insert(0, {loadtests!r})
from locust import FastHttpUser, constant, task  # noqa: E402

import lab_window  # noqa: E402

_stalled = False


class StallingHammer(FastHttpUser):
    wait_time = constant(0.05)

    def on_start(self):
        lab_window.user_ready()

    @task
    def hello(self):
        global _stalled
        lab_window.hold()
        if not _stalled:
            _stalled = True
            get_original("time", "sleep")({stall_s})  # the unpatched sleep: the whole process, heartbeats included
        self.client.get("/hello/")
'''


def test_a_worker_frozen_for_seconds_keeps_its_users(site: str, tmp_path: Path) -> None:
    """Locust's own rule (missing after 3 s silent) would hand a slow worker's users out again: each signs in anew."""
    locustfile = tmp_path / "stalling.py"
    locustfile.write_text(_STALLING_WORKER.format(stall_s=6, loadtests=str(REPO / "loadtests")))
    settings = BenchSettings(site, 4, 4.0, 60, locustfile, tmp_path / "run", processes=2, extra_env={"LAB_WAIT": "0"})
    seconds, start, end, _, _ = _measure(settings, seconds=10, warmup=2)
    log = (tmp_path / "run" / "locust.log").read_text()
    assert "failed to send heartbeat" not in log, log
    assert sum(s["ready"] for s in seconds) == 4  # every user started once: none was taken away and started again
