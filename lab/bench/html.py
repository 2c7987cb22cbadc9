"""The bench report as one self-contained HTML page: charts drawn as inline SVG (computed here), no scripts, no CDN."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import jinja2

from lab.bench.matrix import NOISE, CellReport

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
    measured = [c for c in cells if c.runs]
    maximum = max((c.spread(attribute)[1] for c in measured), default=0.0)
    scale = _scale(maximum)
    bars = []
    for index, cell in enumerate(cells):
        y = 10 + index * (BAR_HEIGHT + ROW_GAP)
        if not cell.runs:
            bars.append(Bar(y, 0, 0, 0, cell.cell.label, "failed", "#999"))
            continue
        low, high = cell.spread(attribute)
        bars.append(Bar(y, cell.median(attribute) * scale, low * scale, high * scale, cell.cell.label,
                        f"{cell.median(attribute):,.0f} {unit}", PALETTE[index % len(PALETTE)]))
    return {"bars": bars, "height": 20 + len(cells) * (BAR_HEIGHT + ROW_GAP), "left": LEFT, "width": WIDTH,
            "bar_height": BAR_HEIGHT}


def timeline_chart(cells: list[CellReport], column: int, height: int = 220) -> dict:
    """One line per cell (its median run): column 1 is requests/s, 2 is p95 ms, over seconds."""
    chosen = []
    for index, cell in enumerate(cells):
        if not cell.runs:
            continue
        ordered = sorted(cell.runs, key=lambda r: r.rps)
        median_run = ordered[len(ordered) // 2]
        if median_run.timeline:
            chosen.append((index, cell, median_run.timeline))
    max_t = max((t[-1][0] for _, _, t in chosen), default=1.0) or 1.0
    max_v = max((p[column] for _, _, t in chosen for p in t), default=1.0) or 1.0
    plot_w, plot_h = WIDTH - 70, height - 40
    series = []
    for index, cell, timeline in chosen:
        points = " ".join(f"{50 + p[0] / max_t * plot_w:.1f},{10 + plot_h - p[column] / max_v * plot_h:.1f}" for p in timeline)
        series.append(Series(cell.cell.label, points, PALETTE[index % len(PALETTE)]))
    return {"series": series, "height": height, "width": WIDTH, "max_t": f"{max_t:.0f}", "max_v": f"{max_v:,.0f}",
            "plot_bottom": 10 + plot_h, "plot_right": 50 + plot_w}


def render(cells: list[CellReport], title: str, machine: dict) -> str:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        undefined=jinja2.StrictUndefined, autoescape=True, trim_blocks=True, lstrip_blocks=True,
    )
    rows = [
        {
            "label": c.cell.label,
            "server": c.cell.server, "web": c.cell.web,
            "workers": c.cell.workers,
            "threads": c.cell.threads,
            "rps": "—" if not c.runs else f"{c.median('rps'):,.0f}",
            "rps_spread": "—" if not c.runs else "{:,.0f}–{:,.0f}".format(*c.spread("rps")),
            "p50": "—" if not c.runs else f"{c.median('p50_ms'):,.0f}",
            "p95": "—" if not c.runs else f"{c.median('p95_ms'):,.0f}",
            "p99": "—" if not c.runs else f"{c.median('p99_ms'):,.0f}",
            "failures": "—" if not c.runs else f"{c.median('failure_pct'):.1f}%",
            "bottleneck": c.bottleneck,
            "error": c.error or "",
            "runs": len(c.runs),
            "wrk": "—" if c.wrk_rps is None else f"{c.wrk_rps:,.0f}",
            "ratio": "—" if c.wrk_ratio is None else f"{c.wrk_ratio:.2f}",
            "wrk_path": c.settings.get("wrk_path") or "—",
        }
        for c in cells
    ]
    return environment.get_template("bench_report.html.j2").render(
        title=title, machine=machine, rows=rows, noise=f"{NOISE:.0%}", with_wrk=any(c.wrk_rps for c in cells),
        rps_chart=bar_chart(cells, "rps", "req/s"), p95_chart=bar_chart(cells, "p95_ms", "ms"),
        rps_timeline=timeline_chart(cells, 1), p95_timeline=timeline_chart(cells, 2),
        verdict=comparison_verdict(cells),
    )


def comparison_verdict(cells: list[CellReport]) -> str:
    """A sentence that crowns nobody when the difference is within the noise."""
    measured = [c for c in cells if c.runs and not c.error]
    if len(measured) < 2:
        return "Only one configuration measured: nothing to compare."
    ranked = sorted(measured, key=lambda c: c.median("rps"), reverse=True)
    best, second = ranked[0], ranked[1]
    gap = (best.median("rps") - second.median("rps")) / second.median("rps") if second.median("rps") else math.inf
    if gap <= NOISE:
        return (f"{best.cell.label} and {second.cell.label} are within {gap:.0%} of each other: less than the "
                f"±{NOISE:.0%} run-to-run spread on this machine, so neither is faster here.")
    return f"{best.cell.label} served {gap:.0%} more requests/s than {second.cell.label} (more than the ±{NOISE:.0%} noise)."

