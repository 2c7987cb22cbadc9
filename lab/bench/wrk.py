"""wrk, the reference load generator: the requests/s one URL serves when the client costs next to nothing."""
from __future__ import annotations

import re
import subprocess

from lab.errors import BenchError
from lab.system import gist


def run_wrk(url: str, connections: int, duration_s: int) -> float:
    """wrk's requests/s against one URL (one thread, as many connections as Locust has users)."""
    try:
        result = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", url],
                                capture_output=True, text=True, timeout=duration_s + 30, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise BenchError("wrk is not installed (Debian: apt-get install wrk)") from None
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish within {duration_s + 30} s") from None
    found = re.search(r"Requests/sec:\s+([0-9.]+)", result.stdout)
    if result.returncode != 0 or not found:
        raise BenchError(f"wrk failed (exit {result.returncode}): {gist(result.stderr + result.stdout)}")
    return float(found.group(1))
