"""Unit tests for the bench matrix: one window for every figure, did-not-settle, the verdict, wrk, --compare, thresholds, the report."""
from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

import pytest

from lab.bench import check_thresholds
from lab.bench.html import comparison_verdict, render
from lab.bench.locust import read_window, window_figures
from lab.bench.matrix import Cell, CellReport, Run, compare_cells, significant, verdict
from lab.bench.report import comparison_table, matrix_table
from lab.bench.wrk import parse_wrk, run_wrk
from lab.errors import BenchError, ThresholdMissed, UsageError
from lab.machine.cpus import CpuSplit

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "bench"


def a_run(rps: float, p95: float = 50.0, generator: float = 0.3, busy: float = 0.5, web: float = 0.6,
          failure_pct: float = 0.0, settled: bool = True, errors: list | None = None, wrk: dict | None = None) -> Run:
    return Run(settled=settled, reason="" if settled else "logins still running: 3 of 200 users signed in by the end of the run",
               rps=rps if settled else math.nan, p50_ms=p95 / 2, p95_ms=p95, p99_ms=p95 * 1.5, failure_pct=failure_pct,
               requests=int(rps * 10), failures=0, stale=0, checked=0, hosts={"web1": int(rps * 5), "web2": int(rps * 5)},
               errors=errors or [], generator_cores=generator, machine_busy=busy,
               host_cores={"lb1": 0.1, "web1": web, "web2": web, "db1": 0.05},
               timeline=[(0.0, rps * 0.9, p95), (1.0, rps, p95 * 1.1), (2.0, rps, p95)], wrk=wrk)


def a_cell(server: str, web: int, runs: list[Run], error: str | None = None, **settings) -> CellReport:
    return CellReport(cell=Cell(server, web, 2, 1, scheme="http"), settings={"scenario": "mix", "users": 32, "duration_s": 20, **settings},
                      runs=runs, error=error, bottleneck="web tier: 1.20 of the hosts' 2 core(s)")


# -- one window: every figure from the same steady seconds -------------------------------------------------------

def second(t: int, ok: int = 0, fail: int = 0, hist: dict | None = None, ready: int = 0, starts: int = 0,
           hosts: dict | None = None, stale: int = 0, checked: int = 0, errors: dict | None = None) -> dict:
    return {"t": t, "ok": ok, "fail": fail, "hist": hist or {}, "errors": errors or {}, "hosts": hosts or {},
            "stale": stale, "checked": checked, "ready": ready, "starts": starts}


def slow_start_with_failures() -> list[dict]:
    """10 users: 4 s of logins (slow, failing), then 10 s at 100 ok + 10 failed per second, 20 ms p50, 50 ms p95."""
    seconds = [second(1000 + t, ok=5, fail=20, hist={"3000": 5}, ready=2 if t < 4 else 0, starts=8,
                      errors={"POST start: login: 502": 20}) for t in range(5)]
    seconds[4]["ready"] = 2  # the tenth user signs in during second 1004
    steady_hist = {"10": 40, "20": 15, "30": 30, "50": 10, "90": 5}
    seconds += [second(1005 + t, ok=100, fail=10, hist=steady_hist, hosts={"web1": 50, "web2": 50, "(balancer)": 10},
                       stale=1 if t % 2 else 0, checked=4, errors={"GET /report/: 500": 10}) for t in range(10)]
    return seconds


def test_one_window_for_every_figure():
    # The repeat ran from 1000.4 to 1015.0: its whole seconds are 1001..1014, steady from 1005 (everyone signed in
    # by 1004, the last start-up request in 1004).
    window = window_figures(slow_start_with_failures(), 1000.4, 1015.0, users=10)
    assert window.settled and window.reason == ""
    assert window.seconds == 10
    assert window.rps == 100  # successful requests only: the 10 failures a second are not in it
    assert window.requests == 1000 and window.failures == 100
    assert window.failure_pct == pytest.approx(100 * 100 / 1100)
    assert (window.p50_ms, window.p95_ms, window.p99_ms) == (20, 50, 90)  # the logins' 3 s answers are not in them
    assert window.hosts == {"web1": 500, "web2": 500, "(balancer)": 100}
    assert (window.stale, window.checked) == (5, 40)
    assert window.errors == [("GET /report/: 500", 100)]  # the logins' 502s were before the window
    assert [point[1] for point in window.timeline] == [100.0] * 10  # the chart's points: the same seconds
    assert sum(point[1] for point in window.timeline) / len(window.timeline) == window.rps


def test_failures_are_excluded_from_requests_per_second():
    all_failing = [second(1000, ready=4)] + [second(1001 + t, ok=0, fail=300, errors={"GET /: 502": 300}) for t in range(5)]
    window = window_figures(all_failing, 1001, 1006, users=4)
    assert window.rps == 0 and window.failure_pct == 100
    assert math.isnan(window.p95_ms)  # no successful request: no latency to report


def test_a_window_whose_logins_never_finish_did_not_settle():
    still_logging_in = [second(1000 + t, ok=1, hist={"6000": 1}, ready=1, starts=2) for t in range(15)]
    window = window_figures(still_logging_in, 1000, 1015, users=200)
    assert not window.settled
    assert window.reason == "logins still running: 15 of 200 users signed in by the end of the run"
    assert math.isnan(window.rps) and math.isnan(window.p50_ms) and window.timeline == []  # never a figure


def test_a_window_steady_for_too_short_a_share_did_not_settle():
    late = [second(1000 + t, ok=10, hist={"10": 10}, ready=10 if t == 7 else 0, starts=1 if t <= 7 else 0) for t in range(10)]
    window = window_figures(late, 1000, 1010, users=10)
    assert not window.settled
    assert window.reason.startswith("steady for only 2 s of 10 s")


def test_a_second_without_any_request_counts_as_zero():
    gap = [second(1000, ready=1), second(1001, ok=10, hist={"5": 10}), second(1003, ok=10, hist={"5": 10})]
    window = window_figures(gap, 1001, 1004, users=1)
    assert window.rps == pytest.approx(20 / 3)
    assert [p[1] for p in window.timeline] == [10.0, 0.0, 10.0]


def test_the_window_file_sums_a_second_written_twice(tmp_path):
    path = tmp_path / "window.jsonl"
    path.write_text(json.dumps(second(5, ok=2, hist={"10": 2}, hosts={"web1": 2})) + "\n"
                    + json.dumps(second(4, ok=1, hist={"10": 1})) + "\n"
                    + json.dumps(second(5, ok=3, fail=1, hist={"10": 3}, hosts={"web1": 1, "web2": 2})) + "\n")
    seconds = read_window(path)
    assert [s["t"] for s in seconds] == [4, 5]
    assert (seconds[1]["ok"], seconds[1]["fail"], seconds[1]["hist"], seconds[1]["hosts"]) == (5, 1, {"10": 5}, {"web1": 3, "web2": 2})
    assert read_window(tmp_path / "missing.jsonl") == []


# -- the verdict ------------------------------------------------------------------------------------

def test_verdict_names_the_load_generator_at_its_share_of_its_cores():
    assert verdict([a_run(100, generator=0.95)], 32, processes=1, generator_cpus=1, host_cpus=1).startswith(
        "load generator: Locust at 0.95 of 1 core(s)")


def test_verdict_names_a_saturated_tier():
    text = verdict([a_run(100, web=0.45)], 32, processes=1, generator_cpus=2, host_cpus=1)
    assert text.startswith("web tier: 0.90 of the hosts' 1 core(s)")


def test_verdict_names_the_closed_loop_when_nothing_is_saturated():
    text = verdict([a_run(100, p95=100, web=0.2, generator=0.2)], 32, processes=1, generator_cpus=1, host_cpus=2)
    assert text.startswith("closed loop: 32 users × 50 ms ≈ 640 req/s, nothing saturated")
    assert text.endswith("add users")


def test_verdict_names_failures_beside_the_limit():
    few = [a_run(100, web=0.2, failure_pct=0.5, errors=[("GET /report/: 502", 4), ("GET /: 502", 1)])]
    text = verdict(few, 32, processes=1, generator_cpus=1, host_cpus=2)
    assert text.startswith("closed loop") and text.endswith("; 0.5% failed (most: GET /report/: 502)")
    saturated = [a_run(100, web=0.9, failure_pct=12.5, errors=[("GET /report/: 502", 40)])]
    text = verdict(saturated, 32, processes=1, generator_cpus=1, host_cpus=2)
    assert text.startswith("web tier: 1.80") and text.endswith("; 12.5% failed (most: GET /report/: 502)")


def test_a_failing_row_with_nothing_saturated_is_about_its_failures_not_advice_to_add_users():
    failing = [a_run(100, web=0.2, failure_pct=3.3, errors=[("POST /transfer/ (POST, csrf): transfer not confirmed", 40)])]
    text = verdict(failing, 32, processes=1, generator_cpus=1, host_cpus=2)
    assert text.startswith("failures: 3.3% failed (most: POST /transfer/ (POST, csrf): transfer not confirmed), "
                           "nothing saturated (busiest web 0.40 of 2 core(s)")
    assert "add users" not in text


def test_a_cell_with_only_some_repeats_settled_says_so():
    runs = [a_run(205, web=0.2), a_run(0, settled=False)]
    text = verdict(runs, 32, processes=1, generator_cpus=1, host_cpus=2)
    assert text.endswith("; only 1 of 2 repeats settled (another: logins still running: 3 of 200 users signed in by "
                         "the end of the run)")
    from rich.console import Console

    console = Console(width=400, record=True)
    console.print(matrix_table([a_cell("gunicorn", 2, runs)]))
    assert "205 (1 run)" in console.export_text() and "205–205" not in console.export_text()


def test_a_machine_busier_than_the_lab_and_locust_account_for_is_called_a_noisy_run():
    # like the trial's memcached step: the hosts' core 0.87 busy, Locust 0.12, the 2-core machine 97 % busy
    noisy = a_run(116, web=0.36, generator=0.12, busy=0.97)
    text = verdict([noisy], 32, processes=1, generator_cpus=1, host_cpus=1, machine_cpus=2)
    assert "; a noisy run: the machine was 0.95 core(s) busier than the lab's hosts and Locust account for" in text
    quiet = a_run(116, web=0.36, generator=0.12, busy=0.5)  # 1.00 busy of 2: hosts 0.87 + Locust 0.12
    assert "noisy" not in verdict([quiet], 32, processes=1, generator_cpus=1, host_cpus=1, machine_cpus=2)
    assert "noisy" not in verdict([noisy], 32, processes=1, generator_cpus=1, host_cpus=1)  # machine not known


def test_verdict_without_per_host_cpu_says_so_instead_of_zero_cores():
    run = a_run(100, web=0.2)
    run.host_cores = {}
    text = verdict([run], 32, processes=1, generator_cpus=1, host_cpus=2)
    assert "per-host CPU not measured" in text and "0.00 cores" not in text


def test_verdict_of_a_cell_that_did_not_settle_tells_how_to_fix_it():
    text = verdict([a_run(0, settled=False)], 200, processes=1, generator_cpus=1, host_cpus=2)
    assert text.startswith("did not settle: logins still running") and text.endswith("longer --warmup or fewer --users")
    assert verdict([], 32, 1, 1, 1) == "not measured"


# -- medians, spread, wrk ---------------------------------------------------------------------------

def test_cell_medians_spread_and_wrk_ratio_per_pair():
    wrk = {"rps": 200.0, "errors": ""}
    cell = a_cell("gunicorn", 2, [a_run(90, wrk=wrk), a_run(110, wrk=wrk), a_run(100, wrk=dict(wrk, rps=250.0))])
    assert cell.median("rps") == 100 and cell.spread("rps") == (90, 110)
    assert cell.wrk_rps == 200 and cell.wrk_ratio == pytest.approx(0.45)
    data = cell.to_dict()
    assert data["median"]["rps"] == 100 and data["spread"]["rps"] == (90, 110) and data["locust_over_wrk"] == pytest.approx(0.45)
    assert math.isnan(a_cell("gunicorn", 1, []).median("rps"))


def test_unsettled_repeats_give_no_figure():
    cell = a_cell("gunicorn", 1, [a_run(0, settled=False), a_run(0, settled=False)])
    assert not cell.measured and math.isnan(cell.median("rps"))
    assert cell.not_settled.startswith("logins still running")
    assert cell.to_dict()["median"] == {}


def test_a_web_host_that_served_nothing_is_marked():
    run = a_run(100)
    run.hosts = {"web1": 1000, "(balancer)": 10}
    cell = a_cell("gunicorn", 2, [run], web_hosts=["web1", "web2"])
    assert cell.hosts == {"web1": 1000, "web2": 0, "(balancer)": 10}
    assert cell.idle_hosts == ["web2 in run 1"]
    assert a_cell("gunicorn", 2, [a_run(100)], web_hosts=["web1", "web2"]).idle_hosts == []


def test_a_web_host_stopped_mid_bench_is_marked_in_the_runs_it_missed():
    """web2 stopped during run 1: its total over the repeats is not 0, but it served nothing in runs 2 and 3."""
    runs = [a_run(100), a_run(100), a_run(100)]
    runs[1].hosts = runs[2].hosts = {"web1": 1000}
    cell = a_cell("gunicorn", 2, runs, web_hosts=["web1", "web2"])
    assert cell.hosts["web2"] == 500
    assert cell.idle_hosts == ["web2 in runs 2, 3"] and cell.to_dict()["idle_hosts"] == ["web2 in runs 2, 3"]


WRK_WITH_ERRORS = """Running 10s test @ http://10.0.0.2/hello/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    30.12ms   10.01ms 200.00ms   80.00%
    Req/Sec     1.05k   100.00     1.20k    70.00%
  10500 requests in 10.00s, 2.00MB read
  Socket errors: connect 0, read 12, write 0, timeout 3
  Non-2xx or 3xx responses: 500
Requests/sec:   1050.00
Transfer/sec:    204.80KB
"""


def test_wrk_non_2xx_and_socket_errors_are_reported_and_left_out():
    result = parse_wrk(WRK_WITH_ERRORS)
    assert (result.requests, result.seconds, result.non_2xx) == (10500, 10.0, 500)
    assert result.socket_errors == {"connect": 0, "read": 12, "write": 0, "timeout": 3}
    assert result.rps == 1000.0  # wrk's own 1050 counts the 500 errors in
    assert result.describe_errors() == "500 non-2xx, 15 socket errors (read 12, timeout 3)"
    clean = parse_wrk(WRK_WITH_ERRORS.replace("  Socket errors: connect 0, read 12, write 0, timeout 3\n", "")
                      .replace("  Non-2xx or 3xx responses: 500\n", ""))
    assert clean.errors == 0 and clean.describe_errors() == "" and clean.rps == 1050.0


def test_a_reference_with_errors_is_marked():
    cell = a_cell("gunicorn", 2, [a_run(100, wrk=parse_wrk(WRK_WITH_ERRORS).to_dict())])
    assert cell.wrk_errors.startswith("500 non-2xx")
    page = render([cell], "t", {"machine": {"cores": 2}})
    assert "500 non-2xx" in page


def fake_wrk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    wrk = tmp_path / "bin" / "wrk"
    wrk.parent.mkdir()
    wrk.write_text("#!/bin/sh\n" + script)
    wrk.chmod(wrk.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{wrk.parent}{os.pathsep}{os.environ['PATH']}")


def test_run_wrk_reads_its_summary(tmp_path, monkeypatch):
    fake_wrk(tmp_path, monkeypatch, "cat <<'EOF'\n" + WRK_WITH_ERRORS + "EOF\n")
    assert run_wrk("http://127.0.0.1/hello/", 10, 5).rps == 1000.0


def test_run_wrk_failure_is_a_bench_error(tmp_path, monkeypatch):
    fake_wrk(tmp_path, monkeypatch, 'echo "unable to connect to 127.0.0.1:80 Connection refused" >&2\nexit 1\n')
    with pytest.raises(BenchError, match="wrk failed.*Connection refused"):
        run_wrk("http://127.0.0.1/", 10, 5)


def test_missing_wrk_is_a_bench_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BenchError, match="apt-get install wrk"):
        run_wrk("http://127.0.0.1/", 10, 5)


# -- --compare: whole key, spread -----------------------------------------------------------------------

def test_significant_only_beyond_both_spreads_and_with_repeats():
    assert significant([100, 104], [110, 112]) is True
    assert significant([100, 112], [110, 112]) is False  # inside the first run's spread
    assert significant([100], [150]) is None  # one repeat: no spread known, no call


def test_compare_matches_the_whole_key_and_uses_the_spread():
    before = [a_cell("gunicorn", 1, [a_run(100, p95=50), a_run(102, p95=50)]).to_dict(),
              a_cell("mod_wsgi", 1, [a_run(100), a_run(110)]).to_dict(),
              a_cell("mod_wsgi", 1, [a_run(10), a_run(11)], users=200).to_dict()]
    after = [a_cell("gunicorn", 1, [a_run(104, p95=40), a_run(106, p95=40)]).to_dict(),
             a_cell("mod_wsgi", 1, [a_run(150)]).to_dict(),
             a_cell("mod_wsgi", 1, [a_run(500), a_run(510)], users=8).to_dict()]
    rows = compare_cells(before, after)
    assert len(rows) == 2  # the users=200 cell has no partner: same label, different key
    gunicorn, mod_wsgi = rows
    assert gunicorn["rps"] == (101, 105, pytest.approx(100 * 4 / 101))
    assert gunicorn["p95_ms"][2] == pytest.approx(-20.0)
    assert gunicorn["spread"] == (2, 2) and gunicorn["significant"] is True
    assert mod_wsgi["significant"] is None  # run B measured once


def test_compare_says_when_a_run_was_noisy():
    """A trial compared the same command 20 minutes apart on a busy machine: -27 %, 'yes', noise not mentioned."""
    quiet = a_cell("gunicorn", 1, [a_run(350), a_run(352)]).to_dict()
    noisy = a_cell("gunicorn", 1, [a_run(255), a_run(257)]).to_dict()
    noisy["bottleneck"] += "; a noisy run: the machine was 1.09 core(s) busier than the lab's hosts and Locust account for"
    [row] = compare_cells([quiet], [noisy])
    assert row["significant"] is True and row["noisy"] == ["B"]
    [clean] = compare_cells([quiet], [quiet])
    assert clean["noisy"] == []
    text = "".join(str(c) for c in comparison_table([row]).columns[-1]._cells)
    assert "yes; B a noisy run" in text


def test_compare_refuses_runs_of_different_scenarios():
    with pytest.raises(UsageError, match="different scenarios"):
        compare_cells([a_cell("gunicorn", 1, [a_run(1)], scenario="mix").to_dict()],
                      [a_cell("gunicorn", 1, [a_run(8)], scenario="hello").to_dict()])


def test_compare_without_common_cells_names_what_differs():
    with pytest.raises(BenchError, match=r"no configuration in common.*differ in duration_s"):
        compare_cells([a_cell("gunicorn", 1, [a_run(1)]).to_dict()],
                      [a_cell("gunicorn", 1, [a_run(1)], duration_s=60).to_dict()])


# -- thresholds ------------------------------------------------------------------------------------

def test_thresholds_pass_when_met_and_are_off_by_default():
    cells = [a_cell("gunicorn", 1, [a_run(100, p95=50, failure_pct=1)])]
    check_thresholds(cells, None, None)
    check_thresholds(cells, 90, 60, 2)


@pytest.mark.parametrize(("rps", "p95", "failed", "needle"), [
    (80, None, None, "80 successful req/s < 90"), (None, 40, None, "p95 50 ms > 40"), (None, None, 0.5, "1.0% failed > 0.5%")])
def test_a_missed_threshold_names_the_cell(rps, p95, failed, needle):
    with pytest.raises(ThresholdMissed, match=needle):
        check_thresholds([a_cell("gunicorn", 1, [a_run(rps or 100, p95=50, failure_pct=1)])], 90 if rps else None, p95, failed)


def test_an_unmeasured_cell_misses_any_threshold():
    with pytest.raises(ThresholdMissed, match="gave no figure"):
        check_thresholds([a_cell("gunicorn", 1, [], error="balancer down")], 1, None)


# -- report ----------------------------------------------------------------------------------------

def test_the_verdict_crowns_nobody_inside_the_spread_or_without_repeats():
    close = [a_cell("gunicorn", 2, [a_run(100), a_run(110)]), a_cell("mod_wsgi", 2, [a_run(95), a_run(104)])]
    assert "neither is faster" in comparison_verdict(close)
    once = [a_cell("gunicorn", 2, [a_run(100)]), a_cell("mod_wsgi", 2, [a_run(150)])]
    assert "says nothing about which is faster" in comparison_verdict(once)
    apart = [a_cell("gunicorn", 2, [a_run(100), a_run(102)]), a_cell("mod_wsgi", 2, [a_run(150), a_run(152)])]
    assert comparison_verdict(apart).startswith("mod_wsgi web×2 workers=2 threads=1 http served 50% more")


def test_the_ladder_is_read_step_by_step_not_fastest_against_second():
    def step(tune: str, runs: list[Run]) -> CellReport:
        return CellReport(cell=Cell("gunicorn", 2, 2, 1, tune=tune, scheme="https"), settings={}, runs=runs)

    ladder = [step("baseline", [a_run(180), a_run(184)]), step("pgbouncer", [a_run(200), a_run(206)]),
              step("memcached", [a_run(180), a_run(210)]), step("replica", [a_run(150), a_run(152)])]
    text = comparison_verdict(ladder)
    assert text.startswith("The tuning ladder, each step against the one below it: pgbouncer +12% req/s vs baseline: "
                           "beyond the spread")
    assert "memcached -4% req/s vs pgbouncer: within the noise" in text
    assert "replica -23% req/s vs memcached: beyond" in text
    html = render(ladder, "t", {})
    assert "+12% req/s vs baseline" in html


def test_report_draws_a_bar_per_cell_and_marks_failed_unsettled_incomplete():
    cells = [a_cell("gunicorn", 2, [a_run(100), a_run(120)]), a_cell("mod_wsgi", 2, [], error="connection refused <lb1>"),
             a_cell("gunicorn", 1, [a_run(0, settled=False)])]
    page = render(cells, "lab bench — test", {"machine": {"cores": 2}, "cpu_split": "shared", "incomplete": "interrupted",
                                              "money": {"before": "10.00", "after": "10.00", "conserved": True}})
    assert page.count('<rect class="bar"') == 6  # two charts, three cells each
    assert 'width="0"' in page  # the failed cell's bar is empty, not missing
    assert "failed: connection refused &lt;lb1&gt;" in page  # escaped
    assert "did not settle: no figure; try a longer --warmup or fewer --users" in page
    assert page.count('<polyline class="series"') == 2  # only the measured cell has a timeline
    assert 'id="incomplete"' in page and "money conserved" in page
    assert "<script" not in page and "http:" not in page.split("<body>")[1].split("How to read")[0]


def test_the_ladder_is_drawn_when_cells_have_tuning_steps():
    cells = [CellReport(Cell("gunicorn", 2, 2, 1, tune=step), {}, [a_run(rps), a_run(rps + 2)]) for step, rps in
             (("baseline", 100), ("pgbouncer", 120))]
    page = render(cells, "t", {"machine": {"cores": 2}})
    assert 'id="ladder"' in page and ">pgbouncer<" in page


def test_terminal_table_survives_brackets_in_errors():
    from rich.console import Console

    console = Console(record=True, width=220)
    cell = a_cell("gunicorn", 1, [a_run(100)], error="wrk failed: ['[red]oops']")
    console.print(matrix_table([cell, a_cell("mod_wsgi", 1, [], error="[bold]down")]))
    text = console.export_text()
    assert "['[red]oops']" in text and "failed: [bold]down" in text


# -- stale reads: the mix's parsing of the site's markers (CONTRACT), from fixtures ----------------------------------

def bankpages():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bankpages", Path(__file__).resolve().parents[1] / "loadtests" / "bankpages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_read_that_misses_the_confirmed_transfer_is_stale():
    pages = bankpages()
    confirmation = pages.transfer_confirmation((FIXTURES / "transfer_confirmed.html").read_text())
    assert confirmation == {"transfer-id": "4711", "from": "AC01001", "from-balance": "999.99", "to": "AC01002",
                            "to-balance": "1000.01"}
    stale_sheet = pages.own_balances((FIXTURES / "balance_stale.html").read_text())
    assert stale_sheet == {"AC01001": "1000.00", "AC01002": "1000.00"}
    assert pages.is_stale(confirmation, stale_sheet) is True
    assert pages.is_stale(confirmation, dict(stale_sheet, AC01001="999.99")) is False
    assert pages.is_stale(confirmation, {}) is None  # a sheet without the account: cannot tell, not counted
    assert pages.transfer_confirmation("<p>Transferred 0.01 from AC00001 to AC00002.</p>") is None  # today's site


def test_the_transfer_form_offers_the_customers_own_accounts():
    pages = bankpages()
    form = (FIXTURES / "transfer_form.html").read_text()
    assert pages.own_accounts(form) == ["AC01001", "AC01002"]
    assert pages.csrf_token(form) == "tok&amp;en42"  # sent back exactly as the form holds it
    assert pages.csrf_token("<p>no form</p>") == ""


def test_the_sign_in_page_is_told_from_the_site_s_other_pages():
    pages = bankpages()
    login = (Path(__file__).resolve().parents[1] / "app/accounts/templates/registration/login.html").read_text()
    rendered = login.replace("{{ form.password }}", '<input type="password" name="password" autocomplete="current-password" required id="id_password">')
    assert pages.is_sign_in_page(rendered)
    for page in ("transfer_form.html", "transfer_confirmed.html", "balance_stale.html"):
        assert not pages.is_sign_in_page((FIXTURES / page).read_text()), page


# -- nothing measured is lost: Ctrl-C during the second cell ----------------------------------------------------------

def test_ctrl_c_during_the_second_cell_keeps_the_first(tmp_path, monkeypatch):
    from decimal import Decimal

    import lab.bench as bench
    from lab.lifecycle import Project
    from lab.state import LabDir
    from lab.topology import resolve

    topology = resolve({}, {})
    monkeypatch.setattr(bench.lifecycle, "running_lab", lambda project: ({"provider": "local"}, topology))
    switched = []
    monkeypatch.setattr(bench.lifecycle, "up", lambda project, overrides, say, on_result, topology: switched.append(topology))
    pins: list[tuple[int, str | None]] = []  # (switches so far, the hosts' CPUs) per pin_cpus call
    monkeypatch.setattr(bench, "get_provider", lambda name: type("FakeProvider", (), {
        "host_cpu_seconds": lambda *a: {}, "pin_cpus": lambda self, project, cpus: pins.append((len(switched), cpus))})())
    monkeypatch.setattr(bench, "plan_split", lambda *a, **k: CpuSplit(hosts="0", generator="1"))
    monkeypatch.setattr(bench.money, "total_balance", lambda project: Decimal("2000.00"))
    monkeypatch.setattr(bench, "_wait_until_answering", lambda project, topology, say: None)  # no site to drain
    monkeypatch.setattr(bench.lifecycle, "ca_file", lambda project: tmp_path / "ca.crt")  # https, the default scheme
    monkeypatch.setattr(LabDir, "secrets", lambda self: {"demo_password": "not-a-secret"})
    measured = []

    def measure(cell, target, settings, folder, host_cpu, say, web_hosts):
        import fcntl

        with open(tmp_path / ".lab" / "lock") as other:  # another command's view: the lab's lock is held
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if measured:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the second cell
        measured.append(cell)
        return CellReport(cell, {"scenario": "hello", "users": 8, "duration_s": 10}, [a_run(100), a_run(104)])

    monkeypatch.setattr(bench, "measure_cell", measure)
    project = Project(tmp_path, LabDir(tmp_path / ".lab"))
    request = bench.BenchRequest(servers=("gunicorn", "mod_wsgi"), scenario="hello", users=8, duration_s=10, repeats=2)
    with pytest.raises(KeyboardInterrupt):
        bench.bench(project, request, lambda message: None, lambda result: None)
    (folder,) = (tmp_path / ".lab" / "results").iterdir()
    saved = json.loads((folder / "results.json").read_text())
    assert [c["label"] for c in saved["cells"]] == [measured[0].label]
    assert saved["cells"][0]["median"]["rps"] == 102
    assert saved["complete"] is False and saved["incomplete"].startswith("interrupted (Ctrl-C); 1 of 2 cells measured")
    page = (folder / "report.html").read_text()
    assert 'id="incomplete"' in page and measured[0].label in page
    assert switched[-1] == topology  # and the lab was put back as it was found
    # pinned at the start, again after the switch to mod_wsgi (hosts it made), let go at the end
    assert pins[:2] == [(0, "0"), (1, "0")] and pins[-1][1] is None
    with LabDir(tmp_path / ".lab").locked():  # and free again afterwards
        pass


def test_the_bench_lock_lets_lab_ups_own_lock_nest_and_nothing_else(tmp_path):
    import fcntl

    from lab.errors import LabBusy
    from lab.state import LabDir

    with LabDir(tmp_path / ".lab").locked(nested_allowed=True):
        with LabDir(tmp_path / ".lab").locked():  # lab up's code, run by the bench
            with open(tmp_path / ".lab" / "lock") as other, pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another command
        with open(tmp_path / ".lab" / "lock") as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # still held after the nested section
    with LabDir(tmp_path / ".lab").locked():
        with pytest.raises(LabBusy):
            with LabDir(tmp_path / ".lab").locked():
                pass


# -- schemes: https is the site; http is the balancer's plain bench port, for anonymous pages only --------------------

def test_the_bench_measures_https_by_default_and_http_on_the_plain_bench_port():
    import lab.bench as bench
    from lab.topology import resolve

    topology = resolve({}, {})
    lb = topology.host("lb1").ip
    assert bench.DEFAULT_SCHEME == "https"
    assert bench._site_url(topology, "https") == f"https://{lb}"
    assert bench._site_url(topology, "http") == f"http://{lb}:8080"  # not port 80: that one only redirects


def test_plain_http_refuses_the_mix_whose_logins_need_secure_cookies():
    import lab.bench as bench
    from lab.errors import UsageError

    bench._check_bench_request(bench.BenchRequest(scenario="hello", schemes=("http", "https")))
    bench._check_bench_request(bench.BenchRequest(scenario="mix", schemes=("https",)))
    with pytest.raises(UsageError, match="Secure cookies") as refused:
        bench._check_bench_request(bench.BenchRequest(scenario="mix", schemes=("http", "https")))
    assert "\n" not in str(refused.value) and "--scenario hello" in str(refused.value)


def flowing(t: int, ok: int = 50) -> dict:
    return second(t, ok=ok, hist={"20": ok}, hosts={"web1": ok})


def test_a_window_with_a_stall_did_not_settle():
    # Every user signed in, then 12 s in which no request finished, then the held requests all at once (the trial's
    # memcached cell after a switch: 53 req/s and p95 11 s, reported as if settled).
    seconds = [second(999, ready=32)] + [flowing(1000 + t) for t in range(5)] \
        + [second(1017, ok=32, fail=2, hist={"11000": 32})] + [flowing(1018 + t) for t in range(12)]
    window = window_figures(seconds, 1000, 1030, users=32)
    assert not window.settled and math.isnan(window.rps) and window.timeline == []
    assert window.reason == "a stall: no request finished for 12 s, from 5 s into the run (median latency otherwise 20 ms)"


def test_a_slow_closed_loop_is_no_stall():
    # Two users at 2 s a request: seconds without a finished request are the loop's pace, not a stall.
    seconds = [second(999, ready=2)] + [second(1000 + t, ok=1, hist={"2000": 1}) for t in range(0, 20, 2)]
    window = window_figures(seconds, 1000, 1020, users=2)
    assert window.settled and window.rps == pytest.approx(0.5)


def test_a_short_gap_is_counted_not_a_stall():
    seconds = [second(999, ready=1)] + [flowing(1000 + t) for t in range(10) if t not in (4, 5)]
    window = window_figures(seconds, 1000, 1010, users=1)
    assert window.settled and window.rps == pytest.approx(40)


def test_locust_workers_on_loadgen_hosts_count_as_the_generator_not_the_servers():
    """A trial's loadgen lab read 'the hosts' 1 core(s): 0.96 busy': loadgen1's Locust counted as a server."""
    run = a_run(100, generator=0.01, web=0.3)
    run.host_cores = {"lb1": 0.05, "web1": 0.3, "web2": 0.3, "db1": 0.05, "loadgen1": 0.95}
    said = verdict([run], users=32, processes=1, generator_cpus=1, host_cpus=1)
    assert said.startswith("load generator: Locust at 0.96 of 1 core(s)"), verdict
