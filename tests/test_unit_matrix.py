"""Unit tests for the bench matrix: steady state, the bottleneck verdict, wrk parsing, --compare, thresholds, the report."""
from __future__ import annotations

import math
import os
import stat
from pathlib import Path

import pytest

from lab.bench import check_thresholds
from lab.bench.html import comparison_verdict, render
from lab.bench.locust import BenchResult
from lab.bench.matrix import Cell, CellReport, Run, compare_cells, steady_state, verdict
from lab.bench.report import matrix_table
from lab.bench.wrk import run_wrk
from lab.errors import BenchError, ThresholdMissed


def a_run(rps: float, p95: float = 50.0, generator: float = 0.3, busy: float = 0.5, web: float = 0.6,
          failure_pct: float = 0.0) -> Run:
    return Run(rps=rps, p50_ms=p95 / 2, p95_ms=p95, p99_ms=p95 * 1.5, failure_pct=failure_pct, requests=int(rps * 10),
               generator_cores=generator, machine_busy=busy, host_cores={"lb1": 0.1, "web1": web, "web2": web, "db1": 0.05},
               timeline=[(0.0, 0.0, 0.0), (1.0, rps * 0.9, p95), (2.0, rps, p95 * 1.1), (3.0, rps, p95)],
               results_dir="/nowhere")


def a_cell(server: str, web: int, runs: list[Run], error: str | None = None) -> CellReport:
    return CellReport(cell=Cell(server, web, 2, 1), settings={}, runs=runs, error=error, bottleneck="web tier (1.20 cores)")


# -- steady state ----------------------------------------------------------------------------------


def history(tmp_path: Path, rows: list[tuple[int, float, int]]) -> BenchResult:
    lines = ["Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,95%,Total Request Count"]
    lines += [f"{t},10,,Aggregated,{rps},0,10,{'N/A' if i == 0 else 40},{total}" for i, (t, rps, total) in enumerate(rows)]
    (tmp_path / "h.csv").write_text("\n".join(lines) + "\n")
    return BenchResult(requests=rows[-1][2], failures=0, rps=rows[-1][2] / 10, p50_ms=10, p95_ms=40, p99_ms=60,
                       failure_ratio=0.0, per_endpoint=(), files={"csv_history": tmp_path / "h.csv"})


def test_steady_state_leaves_the_ramp_up_out(tmp_path):
    # 2 s of ramp-up at a crawl, then 100 req/s for 8 s: Locust's own total (rps=..) averages the crawl in
    result = history(tmp_path, [(1000, 0, 0), (1001, 5, 5), (1002, 100, 10)] + [(1002 + i, 100, 10 + 100 * i) for i in range(1, 9)])
    rps, timeline = steady_state(result, ramp_s=2)
    assert rps == pytest.approx(100)
    assert result.rps < 90
    assert timeline[0] == (0.0, 0.0, 0.0) and timeline[-1][0] == 10.0


def test_steady_state_waits_for_every_users_start_up(tmp_path):
    # all users spawned after 1 s, but logins (start-up requests) go on until t=4: only t>=5 is steady
    lines = ["Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,95%,Total Request Count"]
    for t in range(11):
        lines.append(f"{1000 + t},10,POST,start: /login,1,0,300,900,{min(t, 4)}")
        lines.append(f"{1000 + t},10,,Aggregated,0,0,10,40,{0 if t < 5 else 200 * (t - 5)}")
    (tmp_path / "h.csv").write_text("\n".join(lines) + "\n")
    result = BenchResult(requests=1000, failures=0, rps=100, p50_ms=10, p95_ms=40, p99_ms=60, failure_ratio=0.0,
                         per_endpoint=(), files={"csv_history": tmp_path / "h.csv"})
    rps, timeline = steady_state(result, ramp_s=2)
    assert rps == pytest.approx(200)
    assert len(timeline) == 11


def test_steady_state_falls_back_to_locusts_total_without_history(tmp_path):
    result = BenchResult(requests=10, failures=0, rps=42.0, p50_ms=1, p95_ms=2, p99_ms=3, failure_ratio=0, per_endpoint=(), files={})
    assert steady_state(result, ramp_s=2) == (42.0, [])


# -- verdict ---------------------------------------------------------------------------------------


def test_verdict_names_the_load_generator_when_locust_used_its_core():
    assert verdict([a_run(100, generator=0.95, busy=0.99)] * 3, processes=1, cores=2).startswith("load generator")


def test_verdict_names_the_machine_and_the_busiest_tier_when_cpu_is_full():
    text = verdict([a_run(100, generator=0.5, busy=0.97, web=0.6)] * 3, processes=1, cores=2)
    assert text.startswith("machine CPU") and "web 1.20 cores" in text


def test_verdict_names_the_busiest_tier_otherwise():
    assert verdict([a_run(100, generator=0.2, busy=0.4, web=0.3)], processes=1, cores=2).startswith("web tier (0.60 cores)")


def test_verdict_of_no_runs():
    assert verdict([], processes=1, cores=2) == "not measured"


# -- medians and spread ----------------------------------------------------------------------------


def test_cell_medians_spread_and_wrk_ratio():
    cell = a_cell("gunicorn", 2, [a_run(90), a_run(110), a_run(100)])
    cell.wrk_rps = 200.0
    assert cell.median("rps") == 100 and cell.spread("rps") == (90, 110)
    assert cell.wrk_ratio == pytest.approx(0.5)
    data = cell.to_dict()
    assert data["median"]["rps"] == 100 and data["spread"]["rps"] == (90, 110) and data["locust_over_wrk"] == 0.5
    assert math.isnan(a_cell("gunicorn", 1, []).median("rps"))


# -- wrk -------------------------------------------------------------------------------------------


def fake_wrk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    wrk = tmp_path / "bin" / "wrk"
    wrk.parent.mkdir()
    wrk.write_text("#!/bin/sh\n" + script)
    wrk.chmod(wrk.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{wrk.parent}{os.pathsep}{os.environ['PATH']}")


def test_run_wrk_reads_requests_per_second(tmp_path, monkeypatch):
    fake_wrk(tmp_path, monkeypatch, 'echo "Running 5s test @ $5"\necho "Requests/sec:   1234.56"\necho "Transfer/sec: 1MB"\n')
    assert run_wrk("http://127.0.0.1/hello/", 10, 5) == pytest.approx(1234.56)


def test_run_wrk_failure_is_a_bench_error(tmp_path, monkeypatch):
    fake_wrk(tmp_path, monkeypatch, 'echo "unable to connect to 127.0.0.1:80 Connection refused" >&2\nexit 1\n')
    with pytest.raises(BenchError, match="wrk failed.*Connection refused"):
        run_wrk("http://127.0.0.1/", 10, 5)


def test_missing_wrk_is_a_bench_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BenchError, match="apt-get install wrk"):
        run_wrk("http://127.0.0.1/", 10, 5)


# -- --compare -------------------------------------------------------------------------------------


def test_compare_gives_deltas_and_flags_only_changes_beyond_the_noise():
    before = [a_cell("gunicorn", 1, [a_run(100, p95=50)]).to_dict(), a_cell("mod_wsgi", 1, [a_run(100)]).to_dict()]
    after = [a_cell("gunicorn", 1, [a_run(105, p95=40)]).to_dict(), a_cell("mod_wsgi", 1, [a_run(150)]).to_dict()]
    rows = {r["label"]: r for r in compare_cells(before, after)}
    assert rows["gunicorn web×1 workers=2 threads=1"]["rps"] == (100, 105, pytest.approx(5.0))
    assert rows["gunicorn web×1 workers=2 threads=1"]["p95_ms"][2] == pytest.approx(-20.0)
    assert not rows["gunicorn web×1 workers=2 threads=1"]["significant"]
    assert rows["mod_wsgi web×1 workers=2 threads=1"]["significant"]


def test_compare_without_common_cells_is_a_bench_error():
    with pytest.raises(BenchError, match="no cell in common"):
        compare_cells([a_cell("gunicorn", 1, [a_run(1)]).to_dict()], [a_cell("gunicorn", 2, [a_run(1)]).to_dict()])


# -- thresholds ------------------------------------------------------------------------------------


def test_thresholds_pass_when_met_and_are_off_by_default():
    cells = [a_cell("gunicorn", 1, [a_run(100, p95=50)])]
    check_thresholds(cells, None, None)
    check_thresholds(cells, 90, 60)


@pytest.mark.parametrize(("rps", "p95", "needle"), [(80, None, "80 req/s < 90"), (None, 40, "p95 50 ms > 40")])
def test_a_missed_threshold_names_the_cell(rps, p95, needle):
    with pytest.raises(ThresholdMissed, match=needle):
        check_thresholds([a_cell("gunicorn", 1, [a_run(rps or 100, p95=50)])], 90 if rps else None, p95)


def test_an_unmeasured_cell_misses_any_threshold():
    with pytest.raises(ThresholdMissed, match="was not measured"):
        check_thresholds([a_cell("gunicorn", 1, [], error="balancer down")], 1, None)


# -- report ----------------------------------------------------------------------------------------


def test_verdict_crowns_nobody_within_the_noise():
    close = [a_cell("gunicorn", 2, [a_run(100)]), a_cell("mod_wsgi", 2, [a_run(95)])]
    assert "neither is faster" in comparison_verdict(close)
    apart = [a_cell("gunicorn", 2, [a_run(100)]), a_cell("mod_wsgi", 2, [a_run(150)])]
    assert comparison_verdict(apart).startswith("mod_wsgi web×2 workers=2 threads=1 served 50% more")


def test_report_draws_a_bar_per_cell_and_marks_a_failed_one():
    cells = [a_cell("gunicorn", 2, [a_run(100), a_run(120)]), a_cell("mod_wsgi", 2, [], error="connection refused <lb1>")]
    page = render(cells, "lab bench — test", {"cores": 2})
    assert page.count('<rect class="bar"') == 4  # two charts, two cells each
    assert 'width="0"' in page  # the failed cell's bar is empty, not missing
    assert "failed: connection refused &lt;lb1&gt;" in page  # escaped
    assert page.count('<polyline class="series"') == 2  # only the measured cell has a timeline
    assert "<script" not in page and "http" not in page.split("<body>")[1].split("How to read")[0]


def test_terminal_table_survives_brackets_in_errors():
    from rich.console import Console

    console = Console(record=True, width=200)
    cell = a_cell("gunicorn", 1, [a_run(100)], error="wrk failed: ['[red]oops']")
    console.print(matrix_table([cell, a_cell("mod_wsgi", 1, [], error="[bold]down")]))
    text = console.export_text()
    assert "['[red]oops']" in text and "failed: [bold]down" in text
