"""Presentation of load-test results: rich tables for the terminal."""
from __future__ import annotations

from rich.table import Table
from rich.text import Text


def matrix_table(cells: list) -> Table:
    """One row per configuration: medians with their spread, and what limited it."""
    table = Table(title="lab bench", title_justify="left")
    table.add_column("configuration", overflow="fold")
    for heading in ("req/s (min–max)", "p50 ms", "p95 ms", "p99 ms", "failed"):
        table.add_column(heading, justify="right", no_wrap=True)
    with_wrk = any(cell.wrk_rps for cell in cells)
    if with_wrk:
        table.add_column("wrk req/s", justify="right")
        table.add_column("Locust/wrk", justify="right")
    table.add_column("limited by", overflow="fold")
    for cell in cells:
        reference = [f"{cell.wrk_rps:,.0f}" if cell.wrk_rps else "—",
                     f"{cell.wrk_ratio:.2f}" if cell.wrk_ratio else "—"] if with_wrk else []
        if not cell.runs:
            table.add_row(cell.cell.label, "—", "—", "—", "—", "—", *reference, Text(f"failed: {cell.error}", style="red"))
            continue
        low, high = cell.spread("rps")
        table.add_row(
            cell.cell.label, f"{cell.median('rps'):,.0f} ({low:,.0f}–{high:,.0f})", f"{cell.median('p50_ms'):,.0f}",
            f"{cell.median('p95_ms'):,.0f}", f"{cell.median('p99_ms'):,.0f}", f"{cell.median('failure_pct'):.1f}%",
            # Text, not markup: an error message may hold brackets that rich would read as style tags
            *reference, Text(cell.bottleneck) + (Text(f" (failed: {cell.error})", style="red") if cell.error else Text("")),
        )
    return table


def comparison_table(rows: list[dict]) -> Table:
    table = Table(title="lab bench --compare", title_justify="left")
    table.add_column("configuration")
    for heading in ("req/s A → B", "Δ req/s", "p95 ms A → B", "Δ p95", "beyond ±10% noise"):
        table.add_column(heading, justify="right")
    for row in rows:
        (rps_a, rps_b, rps_d), (p95_a, p95_b, p95_d) = row["rps"], row["p95_ms"]
        table.add_row(row["label"], f"{rps_a:,.0f} → {rps_b:,.0f}", f"{rps_d:+.1f}%", f"{p95_a:,.0f} → {p95_b:,.0f}",
                      f"{p95_d:+.1f}%", "yes" if row["significant"] else "no")
    return table
