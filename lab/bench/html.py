"""The bench report as one self-contained HTML page: charts drawn as inline SVG (computed here), no scripts, no CDN."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import jinja2

from lab.bench.matrix import CellReport, noise_verdict, significant, tls_cost

PALETTE = ("#2f6db5", "#d9822b", "#3c9d5d", "#b5452f", "#7a52b3", "#5f6b7a", "#c2a12b", "#2bb5a6")
WIDTH, BAR_HEIGHT, ROW_GAP, LEFT, RIGHT = 840, 22, 12, 310, 90  # LEFT fits a label like 'mod_wsgi web×2 workers=2 threads=5'


@dataclass(frozen=True)
class Bar:
    y: float
    width: float
    whisker_low: float
    whisker_high: float
    label: str
    value: str
    colour: str


@dataclass(frozen=True)
class Series:
    label: str
    points: str  # SVG polyline points
    colour: str


def _scale(maximum: float) -> float:
    return (WIDTH - LEFT - RIGHT) / maximum if maximum > 0 else 0.0


def bar_chart(cells: list[CellReport], attribute: str, unit: str) -> dict:
    measured = [c for c in cells if c.measured]
    maximum = max((c.spread(attribute)[1] for c in measured), default=0.0)
    scale = _scale(maximum)
    bars = []
    for index, cell in enumerate(cells):
        y = 10 + index * (BAR_HEIGHT + ROW_GAP)
        if not cell.measured:
            bars.append(Bar(y, 0, 0, 0, cell.cell.label, "did not settle" if cell.not_settled else "failed", "#999"))
            continue
        low, high = cell.spread(attribute)
        bars.append(Bar(y, cell.median(attribute) * scale, low * scale, high * scale, cell.cell.label,
                        f"{cell.median(attribute):,.0f} {unit}", PALETTE[index % len(PALETTE)]))
    return {"bars": bars, "height": 20 + len(cells) * (BAR_HEIGHT + ROW_GAP), "left": LEFT, "width": WIDTH,
            "bar_height": BAR_HEIGHT}


def _polyline(points: list[tuple[float, float]], max_t: float, max_v: float, plot_w: float, plot_h: float) -> str:
    """SVG polyline points of (seconds, value) pairs in a plot whose origin is at (50, 10 + plot_h)."""
    return " ".join(f"{50 + t / max_t * plot_w:.1f},{10 + plot_h - v / max_v * plot_h:.1f}" for t, v in points)


def timeline_chart(cells: list[CellReport], column: int, height: int = 220) -> dict:
    """One line per cell (its median run): column 1 is successful requests/s, 2 is p95 ms, each second of the same
    steady window the headline figures come from."""
    chosen = []
    for index, cell in enumerate(cells):
        if not cell.measured:
            continue
        ordered = sorted(cell.settled, key=lambda r: r.rps)
        median_run = ordered[len(ordered) // 2]
        if median_run.timeline:
            chosen.append((index, cell, median_run.timeline))
    max_t = max((t[-1][0] for _, _, t in chosen), default=1.0) or 1.0
    max_v = max((p[column] for _, _, t in chosen for p in t), default=1.0) or 1.0
    plot_w, plot_h = WIDTH - 70, height - 40
    series = []
    for index, cell, timeline in chosen:
        points = _polyline([(p[0], p[column]) for p in timeline], max_t, max_v, plot_w, plot_h)
        series.append(Series(cell.cell.label, points, PALETTE[index % len(PALETTE)]))
    return {"series": series, "height": height, "width": WIDTH, "max_t": f"{max_t:.0f}", "max_v": f"{max_v:,.0f}",
            "plot_bottom": 10 + plot_h, "plot_right": 50 + plot_w}


def host_chart(lines: dict[str, list[tuple[float, float]]], unit: str, height: int = 160) -> dict:
    """One line per host over a configuration's window (the monitor host's samples), on a shared scale."""
    max_t = max((p[0] for points in lines.values() for p in points), default=1.0) or 1.0
    max_v = max((p[1] for points in lines.values() for p in points), default=1.0) or 1.0
    plot_w, plot_h = WIDTH - 70, height - 40
    series = [Series(host, _polyline(points, max_t, max_v, plot_w, plot_h), PALETTE[index % len(PALETTE)])
              for index, (host, points) in enumerate(lines.items()) if points]
    return {"series": series, "height": height, "width": WIDTH, "max_t": f"{max_t:.0f}",
            "max_v": f"{max_v:,.2f}" if max_v < 10 else f"{max_v:,.0f}", "unit": unit,
            "plot_bottom": 10 + plot_h, "plot_right": 50 + plot_w}


def monitor_sections(cells: list[CellReport]) -> list[dict]:
    """Per configuration the monitor host saw: its source and window, each host's CPU and memory chart, or why not."""
    sections = []
    for cell in cells:
        graphs = cell.monitor
        if not graphs:
            continue
        start, end = graphs["window"]
        section = {"label": cell.cell.label, "source": graphs["source"], "error": graphs.get("error", ""),
                   "window": f"{time.strftime('%H:%M:%S', time.localtime(start))}–"
                             f"{time.strftime('%H:%M:%S', time.localtime(end))} ({end - start:.0f} s)"}
        if not section["error"]:
            section["cpu"] = host_chart(graphs["cpu_cores"], "cores")
            section["memory"] = host_chart(graphs["memory_mb"], "MB")
        sections.append(section)
    return sections


def _figure(cell: CellReport, attribute: str, template: str = "{:,.0f}") -> str:
    return template.format(cell.median(attribute)) if cell.measured else "—"


def report_rows(cells: list[CellReport]) -> list[dict]:
    """One row of printed values per cell, for the page's table."""
    rows = []
    for c in cells:
        stale, checked = c.stale
        rows.append({
            "label": c.cell.label, "server": c.cell.server, "web": c.cell.web, "workers": c.cell.workers,
            "threads": c.cell.threads, "tune": c.cell.tune or "—", "scheme": c.cell.scheme,
            "rps": _figure(c, "rps"),
            "rps_spread": "{:,.0f}–{:,.0f}".format(*c.spread("rps")) if len(c.settled) > 1 else "—",
            "p50": _figure(c, "p50_ms"), "p95": _figure(c, "p95_ms"), "p99": _figure(c, "p99_ms"),
            "failures": _figure(c, "failure_pct", "{:.1f}%"),
            "stale": f"{stale} of {checked}" if checked else "—",
            "hosts": ", ".join(f"{name} {count:,}" for name, count in c.hosts.items()) or "—",
            "idle_hosts": "; ".join(c.idle_hosts),
            "bottleneck": c.bottleneck, "error": c.error or "", "not_settled": c.not_settled,
            "runs": f"{len(c.settled)} of {len(c.runs)}" if len(c.settled) != len(c.runs) else str(len(c.runs)),
            "wrk": "—" if c.wrk_rps is None else f"{c.wrk_rps:,.0f}",
            "wrk_errors": c.wrk_errors,
            "ratio": "—" if c.wrk_ratio is None else f"{c.wrk_ratio:.2f}",
            "wrk_path": c.settings.get("wrk_path") or "—",
        })
    return rows


def _change(value: float | None) -> str:
    return "—" if value is None else f"{value:+.1f}%"


def tls_cost_rows(cells: list[CellReport]) -> list[dict]:
    """The cost of TLS, one row of printed values per http/https pair (matrix.tls_cost, as results.json has it)."""
    return [{
        "configuration": row["configuration"],
        "http": "{:,.0f} ({:,.0f}–{:,.0f})".format(row["http_rps"], *row["http_rps_spread"]),
        "https": "{:,.0f} ({:,.0f}–{:,.0f})".format(row["https_rps"], *row["https_rps_spread"]),
        "ratio": "—" if row["https_over_http"] is None else f"{row['https_over_http']:.2f}",
        "change": _change(row["rps_change_pct"]),
        "p95": f"{row['p95_http_ms']:,.0f} → {row['p95_https_ms']:,.0f}",
        "p95_change": _change(row["p95_change_pct"]),
        "verdict": noise_verdict(row["beyond_spread"]),
    } for row in tls_cost([cell.to_dict() for cell in cells])]


def ladder_rows(cells: list[CellReport]) -> list[dict]:
    """The tuning ladder, step by step (cells with a tuning step only): req/s, p95, stale reads, what limited it, and
    the change from the step before (same server, web count and scheme)."""
    steps = dict(ladder_steps(cells))
    return [dict(row, change=steps.get(id(cell), "—")) for cell, row in zip(cells, report_rows(cells))
            if row["tune"] != "—"]


def _ladder(cell: CellReport) -> tuple:
    """Which ladder a step is on: its whole configuration but the step (--server, --web, ... lists make several)."""
    return cell.cell.server, cell.cell.web, cell.cell.workers, cell.cell.threads, cell.cell.scheme


def ladder_steps(cells: list[CellReport]) -> list[tuple[int, str]]:
    """(id of a ladder cell, how it compares with the step below it) for every step that has one below it."""
    below: dict[tuple, CellReport] = {}
    steps = []
    for cell in cells:
        if not cell.cell.tune:
            continue
        previous, below[_ladder(cell)] = below.get(_ladder(cell)), cell
        if previous is None:
            continue
        if not (cell.measured and previous.measured) or cell.error or previous.error:
            steps.append((id(cell), f"no comparison with {previous.cell.tune}: one of them gave no figure or failed"))
            continue
        change = (cell.median("rps") - previous.median("rps")) / previous.median("rps") * 100
        beyond = significant([r.rps for r in previous.settled], [r.rps for r in cell.settled])
        steps.append((id(cell), f"{change:+.0f}% req/s vs {previous.cell.tune}: {noise_verdict(beyond)}"))
    return steps


def render(cells: list[CellReport], title: str, context: dict) -> str:
    """The whole page; `context` holds the machine, the CPU split, the money check and whether the bench finished."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        undefined=jinja2.StrictUndefined, autoescape=True, trim_blocks=True, lstrip_blocks=True,
    )
    money = context.get("money")
    return environment.get_template("bench_report.html.j2").render(
        title=title, machine=context.get("machine", {"cores": "?"}), cpu_split=context.get("cpu_split", "not stated"),
        incomplete=context.get("incomplete") or "",
        money="" if not money else ("money conserved: every balance sums to the same total before and after"
                                    if money["conserved"] else
                                    f"money NOT conserved: {money['before']} before, {money['after']} after"),
        rows=report_rows(cells), ladder=ladder_rows(cells), tls=tls_cost_rows(cells), with_wrk=any(c.wrk_rps for c in cells),
        rps_chart=bar_chart(cells, "rps", "req/s"), p95_chart=bar_chart(cells, "p95_ms", "ms"),
        rps_timeline=timeline_chart(cells, 1), p95_timeline=timeline_chart(cells, 2),
        verdict=comparison_verdict(cells), settle_fix="a longer --warmup or fewer --users",
        monitor=monitor_sections(cells),
    )


def comparison_verdict(cells: list[CellReport]) -> str:
    """A sentence that crowns nobody unless the gap is beyond both configurations' spread, measured with repeats >= 2.

    A tuning ladder is read step by step (each step against the one below it), not fastest against second fastest."""
    ladder = {id(cell): cell for cell in cells if cell.cell.tune}
    steps = ladder_steps(cells)
    if steps:
        # With several ladders (--server or --web lists) a step's name alone would not say which ladder it is on.
        several = len({_ladder(cell) for cell in ladder.values()}) > 1
        name = (lambda c: c.cell.label) if several else (lambda c: c.cell.tune)
        return "The tuning ladder, each step against the one below it: " + "; ".join(
            f"{name(ladder[cell_id])} {change}" for cell_id, change in steps) + "."
    measured = [c for c in cells if c.measured and not c.error]
    if len(measured) < 2:
        return "Only one configuration measured: nothing to compare."
    ranked = sorted(measured, key=lambda c: c.median("rps"), reverse=True)
    best, second = ranked[0], ranked[1]
    gap = (best.median("rps") - second.median("rps")) / second.median("rps") if second.median("rps") else math.inf
    verdict = significant([r.rps for r in best.settled], [r.rps for r in second.settled])
    if verdict is None:
        return (f"{best.cell.label} served {gap:.0%} more successful requests/s than {second.cell.label}, measured "
                f"once each: with fewer than 2 repeats the spread is unknown, so this says nothing about which is faster.")
    if not verdict:
        return (f"{best.cell.label} and {second.cell.label} are within {gap:.0%} of each other, inside the spread of "
                f"their own repeats: neither is faster here.")
    return (f"{best.cell.label} served {gap:.0%} more successful requests/s than {second.cell.label}, beyond the spread "
            f"of both configurations' repeats.")
