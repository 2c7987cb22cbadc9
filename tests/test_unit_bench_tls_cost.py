"""Unit tests for the cost of TLS: http and https cells of the same configuration paired in results.json, the terminal and the report."""
from __future__ import annotations

import json

import pytest

from lab.bench import _write_results
from lab.bench.matrix import Cell, CellReport, Run, beyond_spread, tls_cost
from lab.bench.report import tls_cost_lines
from tests.test_unit_matrix import a_run

CONTEXT = {"machine": {"cores": 2}, "cpu_split": "shared", "money": None}


def a_scheme_cell(scheme: str, runs: list[Run], error: str | None = None, web: int = 2, **settings) -> CellReport:
    return CellReport(cell=Cell("gunicorn", web, 2, 1, scheme=scheme),
                      settings={"scenario": "hello", "users": 8, "duration_s": 10, **settings}, runs=runs, error=error,
                      bottleneck="closed loop")


def written(tmp_path, cells: list[CellReport]) -> tuple[list[dict], str]:
    """results.json's tls_cost and report.html, as the bench writes them after a cell."""
    _write_results(tmp_path, cells, CONTEXT, incomplete=None)
    return json.loads((tmp_path / "results.json").read_text())["tls_cost"], (tmp_path / "report.html").read_text()


def test_a_pair_gives_the_cost_of_tls(tmp_path):
    cells = [a_scheme_cell("http", [a_run(990, p95=10), a_run(1000, p95=10), a_run(1010, p95=10)]),
             a_scheme_cell("https", [a_run(790, p95=12), a_run(800, p95=12), a_run(810, p95=12)])]
    rows, page = written(tmp_path, cells)
    assert rows == [{
        "configuration": "gunicorn web×2 workers=2 threads=1",
        "http_rps": 1000, "https_rps": 800, "https_over_http": pytest.approx(0.8), "rps_change_pct": pytest.approx(-20.0),
        "http_rps_spread": [990, 1010], "https_rps_spread": [790, 810],
        "p95_http_ms": 10, "p95_https_ms": 12, "p95_change_pct": pytest.approx(20.0),
        "beyond_spread": True,
    }]
    assert tls_cost_lines(cells) == [
        "TLS cost, gunicorn web×2 workers=2 threads=1: https 800 (790–810) vs http 1,000 (990–1,010) ok req/s "
        "(median, min–max), https/http 0.80 (-20.0%); p95 10 → 12 ms (+20.0%); beyond the spread of the repeats"]
    table = page.split('id="tls-cost"')[1].split("</table>")[0]
    assert "<td>1,000 (990–1,010)</td><td>800 (790–810)</td><td>0.80</td><td>-20.0%</td>" in table
    assert "<td>10 → 12</td><td>+20.0%</td>" in table and "beyond the spread of the repeats" in table


def test_each_configuration_is_paired_with_its_own_https_cell():
    cells = [a_scheme_cell(scheme, [a_run(rps), a_run(rps + 2)], web=web)
             for web, scale in ((1, 1), (2, 2)) for scheme, rps in (("http", 500 * scale), ("https", 400 * scale))]
    rows = tls_cost(c.to_dict() for c in cells)
    assert [(r["configuration"], r["http_rps"], r["https_rps"]) for r in rows] == [
        ("gunicorn web×1 workers=2 threads=1", 501, 401), ("gunicorn web×2 workers=2 threads=1", 1001, 801)]


def test_a_run_with_only_https_has_no_tls_cost(tmp_path):
    rows, page = written(tmp_path, [a_scheme_cell("https", [a_run(800), a_run(810)]),
                                    a_scheme_cell("https", [a_run(400), a_run(410)], web=1)])
    assert rows == []
    assert tls_cost_lines([a_scheme_cell("https", [a_run(800), a_run(810)])]) == []
    assert 'id="tls-cost"' not in page and "cost of TLS" not in page


@pytest.mark.parametrize("change", [{"users": 16}, {"scenario": "mix"}, {"duration_s": 20}])
def test_http_and_https_of_different_configurations_are_no_pair(change):
    cells = [a_scheme_cell("http", [a_run(1000), a_run(1002)]), a_scheme_cell("https", [a_run(800), a_run(802)], **change)]
    assert tls_cost(c.to_dict() for c in cells) == []


def test_a_failed_or_unmeasured_side_gives_no_pair():
    https = a_scheme_cell("https", [a_run(800), a_run(802)])
    failed = a_scheme_cell("http", [a_run(1000), a_run(1002)], error="12.0% of requests failed (--max-failed-pct 5)")
    unsettled = a_scheme_cell("http", [a_run(0, settled=False)])
    assert tls_cost(c.to_dict() for c in (failed, https)) == []
    assert tls_cost(c.to_dict() for c in (unsettled, https)) == []


def test_overlapping_spreads_are_within_the_noise(tmp_path):
    cells = [a_scheme_cell("http", [a_run(900), a_run(1000), a_run(1100)]),
             a_scheme_cell("https", [a_run(850), a_run(950), a_run(1050)])]
    rows, page = written(tmp_path, cells)
    assert rows[0]["beyond_spread"] is False and rows[0]["https_over_http"] == pytest.approx(0.95)
    (line,) = tls_cost_lines(cells)
    assert "within the noise" in line and "beyond" not in line
    assert "within the noise" in page.split('id="tls-cost"')[1].split("</table>")[0]


def test_medians_apart_by_more_than_each_spread_are_still_noise_when_the_ranges_overlap():
    # Skewed repeats: the gap (35) exceeds both spreads (30, 10), yet an https repeat (125) falls inside http's range.
    assert beyond_spread([100, 100, 130], [125, 135, 135]) is False
    assert beyond_spread([100, 102], [110, 112]) is True
    cells = [a_scheme_cell("http", [a_run(100), a_run(100), a_run(130)]),
             a_scheme_cell("https", [a_run(125), a_run(135), a_run(135)])]
    assert tls_cost(c.to_dict() for c in cells)[0]["beyond_spread"] is False


def test_one_repeat_cannot_tell_the_noise(tmp_path):
    cells = [a_scheme_cell("http", [a_run(1000)]), a_scheme_cell("https", [a_run(500)])]
    rows, _ = written(tmp_path, cells)
    assert rows[0]["beyond_spread"] is None and rows[0]["https_over_http"] == pytest.approx(0.5)
    assert "can't tell: fewer than 2 repeats" in tls_cost_lines(cells)[0]
