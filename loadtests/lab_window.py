"""Locust plug-in for `lab bench`: every request counted per second into a JSON-lines file, and a pause switch.

Imported by the locustfiles. One Locust process lives across a configuration's warm-up and its repeats (customers
sign in once); `lab bench` cuts each repeat's window out of these per-second lines afterwards, so requests/s,
percentiles, failures, stale reads and requests per web host all come from the same seconds. With --processes or
remote workers the workers ship their seconds to the master, which alone writes the file.

Environment: LAB_WINDOW_FILE (where the lines go; unset: the plug-in stays off), LAB_CONTROL_FILE (holds "run",
"pause" or "stop": paused users send nothing while wrk measures; "stop" ends the run).
"""
from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from typing import Any

import gevent
import locust.runners
from locust import events
from locust.runners import MasterRunner, WorkerRunner

STARTUP_PREFIX = "start: "  # a user's sign-in requests: the steady state begins once they are all done
SERVED_BY = "X-Served-By"  # set by the site on every response it makes; nginx's own static files carry none
NO_WEB_HOST = "(balancer)"
# Workers report every 3 s: a second is written once they normally cannot add to it any more. What a late worker
# (one frozen for longer) adds to a second already written goes into another line for it; readers sum them.
FLUSH_LAG_S = 5
POLL_S = 0.2
# Locust's master calls a worker missing after 3 heartbeats (3 s) without a word, takes its users away, and when it
# speaks again hands users out anew: every customer moved signs in again, mid-run. A worker on a generator core
# starved for a few seconds (2 cores, TLS) is slow, not gone; a worker silent for this long is.
WORKER_SILENT_S = 30

_seconds: dict[int, dict[str, Any]] = defaultdict(lambda: {"ok": 0, "fail": 0, "hist": Counter(), "errors": Counter(),
                                                           "hosts": Counter(), "stale": 0, "checked": 0, "ready": 0,
                                                           "starts": 0})
_paused = False


def bucket_ms(milliseconds: float) -> int:
    """Locust's own rounding (2 significant digits from 100 ms up), so our percentiles read like its own."""
    if milliseconds < 100:
        return int(round(milliseconds))
    if milliseconds < 1000:
        return int(round(milliseconds, -1))
    if milliseconds < 10000:
        return int(round(milliseconds, -2))
    return int(round(milliseconds, -3))


def _second() -> dict[str, Any]:
    return _seconds[int(time.time())]


def hold() -> None:
    """Call first in every task: while `lab bench` pauses the load (wrk measuring), users wait here."""
    while _paused:
        gevent.sleep(POLL_S)


def user_ready() -> None:
    """Call when a user's start-up (its sign-in) is done."""
    _second()["ready"] += 1


def count(what: str) -> None:
    """Count a scenario event in this second: "stale" (a read that missed a confirmed transfer) or "checked"."""
    _second()[what] += 1


@events.request.add_listener
def _on_request(request_type: str, name: str, response_time: float, response: Any = None, exception: Any = None,
                **_: Any) -> None:
    second = _second()
    if name.startswith(STARTUP_PREFIX):
        second["starts"] += 1
        return
    if exception is not None:
        second["fail"] += 1
        second["errors"][f"{request_type} {name}: {' '.join(str(exception).split())[:160]}"] += 1
    else:
        second["ok"] += 1
        second["hist"][bucket_ms(response_time or 0)] += 1
    headers = getattr(response, "headers", None) or {}
    host = headers.get(SERVED_BY) if hasattr(headers, "get") else None
    if response is not None and getattr(response, "status_code", 0):
        second["hosts"][host or NO_WEB_HOST] += 1


def _merge(into: dict[str, Any], data: dict[str, Any]) -> None:
    for key in ("ok", "fail", "stale", "checked", "ready", "starts"):
        into[key] += data.get(key, 0)
    for key in ("hist", "errors", "hosts"):
        into[key].update({(int(k) if key == "hist" else k): v for k, v in data.get(key, {}).items()})


def _as_json(t: int, data: dict[str, Any]) -> str:
    return json.dumps({"t": t, **{k: (dict(v) if isinstance(v, Counter) else v) for k, v in data.items()}})


def _flush(path: str, everything: bool) -> None:
    cutoff = time.time() - (0 if everything else FLUSH_LAG_S)
    ready = sorted(t for t in list(_seconds) if t < cutoff)
    if not ready:
        return
    with open(path, "a", encoding="utf-8") as out:
        for t in ready:
            out.write(_as_json(t, _seconds.pop(t)) + "\n")


def _set_paused(paused: bool) -> None:
    global _paused
    _paused = paused


def _watch_control(environment: Any, window: str, control: str | None) -> None:
    """The master's (or the only process's) loop: write finished seconds, follow the control file."""
    last = "run"
    while True:
        gevent.sleep(POLL_S)
        _flush(window, everything=False)
        if not control:
            continue
        try:
            wanted = open(control, encoding="utf-8").read().strip() or "run"
        except OSError:
            wanted = "run"
        if wanted == last:
            continue
        last = wanted
        if wanted == "stop":
            environment.runner.quit()
            return
        _set_paused(wanted == "pause")
        if isinstance(environment.runner, MasterRunner):
            environment.runner.send_message("lab_pause", wanted == "pause")


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    window = os.environ.get("LAB_WINDOW_FILE")
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        runner.register_message("lab_pause", lambda message, **__: _set_paused(bool(message.data)))
        return
    if not window:
        return
    if isinstance(runner, MasterRunner):
        locust.runners.HEARTBEAT_LIVENESS = WORKER_SILENT_S // locust.runners.HEARTBEAT_INTERVAL

        def _on_worker_report(client_id: str, data: dict[str, Any]) -> None:
            for t, seconds in data.get("lab_window", {}).items():
                _merge(_seconds[int(t)], seconds)

        events.worker_report.add_listener(_on_worker_report)
    gevent.spawn(_watch_control, environment, window, os.environ.get("LAB_CONTROL_FILE"))
    events.quitting.add_listener(lambda **__: _flush(window, everything=True))


@events.report_to_master.add_listener
def _on_report_to_master(client_id: str, data: dict[str, Any]) -> None:
    """A worker hands over every second it has counted so far; the master merges them by second."""
    shipped = {t: {k: (dict(v) if isinstance(v, Counter) else v) for k, v in s.items()} for t, s in _seconds.items()}
    _seconds.clear()
    data["lab_window"] = shipped
