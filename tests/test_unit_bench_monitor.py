"""Unit tests for lab.bench.monitor and its part of the report: the monitor host's graphs of each configuration's
window (Prometheus answered by a fake fetch; no lab needed)."""
from __future__ import annotations

import json
import urllib.parse

from lab.bench.html import render
from lab.bench.monitor import CPU_QUERY, MEMORY_QUERY, STEP_S, host_graphs
from lab.bench.matrix import Cell, CellReport

START, END = 1_800_000_000.0, 1_800_000_030.0
MB = 1024 * 1024


def prometheus_answering(series: dict[str, dict[str, list[float]]]):
    """A fetch that answers query_range like Prometheus: per query, per instance, one value every STEP_S."""
    asked = []

    def fetch(url: str) -> dict:
        query = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)
        asked.append(query)
        values = series[query["query"][0]]
        return {"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {"instance": host}, "values": [[START + i * STEP_S, str(v)] for i, v in enumerate(points)]}
            for host, points in values.items()]}}
    return fetch, asked


def test_each_hosts_cpu_and_memory_over_the_window_come_from_the_process_exporter_series():
    fetch, asked = prometheus_answering({
        CPU_QUERY: {"web1": [0.5, 0.9, 0.8], "db1": [0.1, 0.2, 0.1]},
        MEMORY_QUERY: {"web1": [120 * MB, 122 * MB, 121 * MB], "db1": [40 * MB, 40 * MB, 41 * MB]},
    })
    slept = []
    graphs = host_graphs("http://192.168.56.91:9090/", (START, END), fetch, sleep=slept.append, now=lambda: END + 1)
    assert [q["query"][0] for q in asked] == [CPU_QUERY, MEMORY_QUERY]
    assert all(q["start"] == [f"{START:.3f}"] and q["end"] == [f"{END:.3f}"] and q["step"] == ["5s"] for q in asked)
    assert slept == [STEP_S - 1]  # the window's last seconds reach Prometheus with its next scrape
    assert graphs["cpu_cores"] == {"db1": [(0.0, 0.1), (5.0, 0.2), (10.0, 0.1)], "web1": [(0.0, 0.5), (5.0, 0.9), (10.0, 0.8)]}
    assert graphs["memory_mb"]["web1"] == [(0.0, 120.0), (5.0, 122.0), (10.0, 121.0)]
    assert graphs["source"] == "http://192.168.56.91:9090/" and graphs["window"] == [START, END]
    json.dumps(graphs)  # results.json keeps it as it is


def test_a_monitor_host_that_does_not_answer_is_a_line_in_the_report_not_a_failed_bench():
    def refused(url: str) -> dict:
        raise ConnectionRefusedError(111, "Connection refused")
    graphs = host_graphs("http://192.168.56.91:9090/", (START, END), refused, sleep=lambda s: None, now=lambda: END + 60)
    assert graphs["error"] == "[Errno 111] Connection refused" and "cpu_cores" not in graphs
    errored = {"status": "error", "error": "parse error at char 4"}
    graphs = host_graphs("http://x:9090/", (START, END), lambda url: errored, sleep=lambda s: None, now=lambda: END + 60)
    assert graphs["error"] == "parse error at char 4"


def a_cell_with(monitor: dict | None) -> CellReport:
    return CellReport(cell=Cell("gunicorn", 2, 2, 1), settings={"scenario": "mix"}, window=(START, END), monitor=monitor)


def test_the_report_draws_one_line_per_host_for_cpu_and_memory_per_configuration():
    fetch, _ = prometheus_answering({CPU_QUERY: {"web1": [0.5, 0.9], "web2": [0.4, 0.7]},
                                     MEMORY_QUERY: {"web1": [120 * MB, 121 * MB], "web2": [118 * MB, 119 * MB]}})
    cell = a_cell_with(host_graphs("http://192.168.56.91:9090/", (START, END), fetch, sleep=lambda s: None, now=lambda: END + 9))
    page = render([cell], "t", {"machine": {"cores": 2}})
    assert "Each host, from the monitor host" in page and "from http://192.168.56.91:9090/" in page
    assert page.count('class="chart host-chart"') == 2  # CPU and memory
    assert page.count("<title>web1</title>") == 2 and page.count("<title>web2</title>") == 2
    assert "0.90 cores" in page and "121 MB" in page
    assert cell.to_dict()["window"] == [START, END] and cell.to_dict()["monitor"]["cpu_cores"]["web2"]


def test_no_monitor_host_no_section_and_a_silent_one_is_said():
    assert "Each host, from the monitor host" not in render([a_cell_with(None)], "t", {})
    page = render([a_cell_with({"source": "http://x:9090/", "window": [START, END], "error": "timed out"})], "t", {})
    assert "No graphs: the monitor host did not answer (timed out)." in page
