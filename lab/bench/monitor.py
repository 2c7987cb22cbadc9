"""What the lab's monitor host saw while `lab bench` measured a configuration: each host's CPU (cores) and resident
memory (MB) over the configuration's measured window, asked from Prometheus' query_range API."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from typing import Any, Callable

# Summed over the host's own processes (the process exporter, provision/step6_monitor): a local host's node exporter
# reports the whole machine's CPU and memory, its processes are its own under either provider.
CPU_QUERY = "sum by (instance) (rate(namedprocess_namegroup_cpu_seconds_total[15s]))"
MEMORY_QUERY = 'sum by (instance) (namedprocess_namegroup_memory_bytes{memtype="resident"})'
STEP_S = 5  # Prometheus scrapes every 5 s (provision/step6_monitor/recipes.py's SCRAPE_INTERVAL_S)
QUERY_TIMEOUT_S = 10
MB = 1024 * 1024

Fetch = Callable[[str], dict[str, Any]]


def fetch_json(url: str) -> dict[str, Any]:
    """GET a Prometheus API URL on the lab's private network (never through a proxy)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=QUERY_TIMEOUT_S) as answer:
        return json.load(answer)


def query_range(prometheus: str, query: str, start: float, end: float, fetch: Fetch) -> dict[str, list[tuple[float, float]]]:
    """Per instance (host name), (seconds since start, value) every STEP_S from start to end."""
    url = prometheus.rstrip("/") + "/api/v1/query_range?" + urllib.parse.urlencode(
        {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{STEP_S}s"})
    answer = fetch(url)
    if answer.get("status") != "success":
        raise ValueError(answer.get("error") or "Prometheus did not answer with success")
    return {series["metric"].get("instance", "?"): [(round(float(t) - start, 1), float(v)) for t, v in series["values"]]
            for series in answer["data"]["result"]}


def host_graphs(prometheus: str, window: tuple[float, float], fetch: Fetch = fetch_json,
                sleep: Callable[[float], None] = time.sleep, now: Callable[[], float] = time.time) -> dict[str, Any]:
    """Each host's CPU in cores and resident memory in MB over the window (epoch seconds), as results.json keeps it;
    a Prometheus that cannot answer gives {"error": why} instead, and the bench goes on."""
    start, end = window
    # The window's last seconds reach Prometheus with its next scrape.
    sleep(max(0.0, end + STEP_S - now()))
    try:
        cpu = query_range(prometheus, CPU_QUERY, start, end, fetch)
        memory = query_range(prometheus, MEMORY_QUERY, start, end, fetch)
    except (OSError, ValueError, KeyError) as error:
        return {"source": prometheus, "window": [start, end], "error": " ".join(str(error).split()) or type(error).__name__}
    return {"source": prometheus, "window": [start, end], "step_s": STEP_S,
            "cpu_cores": {host: [(t, round(v, 3)) for t, v in points] for host, points in sorted(cpu.items())},
            "memory_mb": {host: [(t, round(v / MB, 1)) for t, v in points] for host, points in sorted(memory.items())}}
