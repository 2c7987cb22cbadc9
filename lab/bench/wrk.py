"""wrk, the reference load generator: the requests/s one URL serves when the client costs next to nothing."""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from typing import Sequence

from lab.errors import BenchError
from lab.system import gist

_SOCKET_ERRORS = re.compile(r"Socket errors:\s*connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s*(\d+)")
_REQUESTS = re.compile(r"(\d+) requests in ([0-9.]+)(m?s|m|h)\b")
_RATE = re.compile(r"Requests/sec:\s+([0-9.]+)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run measured; every response that was not 2xx/3xx and every socket error kept apart."""

    requests: int
    seconds: float
    non_2xx: int
    socket_errors: dict[str, int] = field(default_factory=dict)  # connect, read, write, timeout

    @property
    def rps(self) -> float:
        """Successful requests per second (wrk's own Requests/sec counts errors in)."""
        return max(self.requests - self.non_2xx, 0) / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())

    def describe_errors(self) -> str:
        """"" when clean, else what went wrong, e.g. "12 non-2xx, 3 socket errors (timeout 3)"."""
        if not self.errors:
            return ""
        parts = [f"{self.non_2xx} non-2xx"] if self.non_2xx else []
        failed = {kind: n for kind, n in self.socket_errors.items() if n}
        if failed:
            parts.append(f"{sum(failed.values())} socket errors ({', '.join(f'{k} {n}' for k, n in failed.items())})")
        return ", ".join(parts)

    def to_dict(self) -> dict:
        return {"rps": self.rps, "requests": self.requests, "seconds": self.seconds, "non_2xx": self.non_2xx,
                "socket_errors": self.socket_errors, "errors": self.describe_errors()}


def parse_wrk(output: str) -> WrkResult:
    """wrk's summary as a WrkResult; ValueError when the summary is not there."""
    found = _REQUESTS.search(output)
    if not found or not _RATE.search(output):
        raise ValueError("no wrk summary in the output")
    seconds = float(found.group(2)) * _UNIT_S[found.group(3)]
    socket = _SOCKET_ERRORS.search(output)
    non_2xx = _NON_2XX.search(output)
    return WrkResult(
        requests=int(found.group(1)), seconds=seconds, non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=dict(zip(("connect", "read", "write", "timeout"), map(int, socket.groups()))) if socket else {},
    )


def run_wrk(url: str, connections: int, duration_s: int, prefix: Sequence[str] = ()) -> WrkResult:
    """wrk against one URL (one thread, as many connections as Locust has users), under `prefix` (e.g. taskset)."""
    try:
        result = subprocess.run([*prefix, "wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", url],
                                capture_output=True, text=True, timeout=duration_s + 30, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise BenchError("wrk is not installed (Debian: apt-get install wrk)") from None
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish within {duration_s + 30} s") from None
    try:
        parsed = parse_wrk(result.stdout)
    except ValueError:
        parsed = None
    if result.returncode != 0 or parsed is None:
        raise BenchError(f"wrk failed (exit {result.returncode}): {gist(result.stderr + result.stdout)}")
    return parsed
