"""Presentation of load-test results for the terminal: rich tables, and a line per http/https pair for the cost of TLS."""
from __future__ import annotations

import math

from rich.table import Table
from rich.text import Text

from lab.bench.html import tls_cost_rows
from lab.bench.matrix import SETTLE_FIX, CellReport


def matrix_table(cells: list[CellReport], money: str = "", cpu_split: str = "") -> Table:
    """One row per configuration: successful req/s with their spread, latency, failures, stale reads, what limited it."""
    caption = "; ".join(part for part in (cpu_split and f"CPUs: {cpu_split}", money) if part)
    table = Table(title="lab bench", title_justify="left", caption=caption or None, caption_justify="left")
    table.add_column("configuration", overflow="fold")
    for heading in ("ok req/s (min–max)", "p50 ms", "p95 ms", "p99 ms", "failed", "stale/checked"):
        table.add_column(heading, justify="right", no_wrap=True)
    with_wrk = any(cell.wrk_rps for cell in cells)
    if with_wrk:
        table.add_column("wrk req/s", justify="right")
        table.add_column("Locust/wrk", justify="right")
    table.add_column("per web host (all repeats)", overflow="fold")
    table.add_column("limited by", overflow="fold")
    for cell in cells:
        reference = [(f"{cell.wrk_rps:,.0f}" if cell.wrk_rps else "—") + (" (errors)" if cell.wrk_errors else ""),
                     f"{cell.wrk_ratio:.2f}" if cell.wrk_ratio else "—"] if with_wrk else []
        hosts = Text(", ".join(f"{name} {count:,}" for name, count in cell.hosts.items()) or "—")
        if cell.idle_hosts:
            hosts += Text(f" (served nothing: {'; '.join(cell.idle_hosts)})", style="red")
        stale, checked = cell.stale
        if not cell.measured:
            why = (f"did not settle: {cell.not_settled}; {SETTLE_FIX}" if cell.not_settled else f"failed: {cell.error}")
            table.add_row(cell.cell.label, "—", "—", "—", "—", "—", "—", *reference, hosts, Text(why, style="red"))
            continue
        low, high = cell.spread("rps")
        # One settled repeat has no spread: "205 (205–205)" would read as a very steady figure.
        spread = f"{low:,.0f}–{high:,.0f}" if len(cell.settled) > 1 else "1 run"
        table.add_row(
            cell.cell.label, f"{cell.median('rps'):,.0f} ({spread})", f"{cell.median('p50_ms'):,.0f}",
            f"{cell.median('p95_ms'):,.0f}", f"{cell.median('p99_ms'):,.0f}", f"{cell.median('failure_pct'):.1f}%",
            f"{stale}/{checked}" if checked else "—",
            # Text, not markup: an error message may hold brackets that rich would read as style tags
            *reference, hosts,
            Text(cell.bottleneck) + (Text(f" (failed: {cell.error})", style="red") if cell.error else Text("")),
        )
    return table


def comparison_table(rows: list[dict]) -> Table:
    """Deltas between two runs, configuration by configuration (matched by their whole key)."""
    table = Table(title="lab bench --compare", title_justify="left")
    table.add_column("configuration")
    for heading in ("ok req/s A → B", "Δ req/s", "spread A / B", "p95 ms A → B", "Δ p95", "beyond both spreads"):
        table.add_column(heading, justify="right")
    for row in rows:
        (rps_a, rps_b, rps_d), (p95_a, p95_b, p95_d) = row["rps"], row["p95_ms"]
        spread = " / ".join("—" if math.isnan(s) else f"{s:,.0f}" for s in row["spread"])
        verdict = {True: "yes", False: "no", None: "can't tell (repeats < 2)"}[row["significant"]]
        if row.get("noisy"):
            verdict += f"; {' and '.join(row['noisy'])} a noisy run: may be the machine's other work"
        table.add_row(row["label"], f"{rps_a:,.0f} → {rps_b:,.0f}", f"{rps_d:+.1f}%", spread,
                      f"{p95_a:,.0f} → {p95_b:,.0f}", f"{p95_d:+.1f}%", verdict)
    return table


def tls_cost_lines(cells: list[CellReport]) -> list[str]:
    """One line per http/https pair of the same configuration: what TLS cost in req/s and p95, and whether it is noise."""
    # The report's own printed values, so the terminal and report.html never disagree on a figure.
    return [f"TLS cost, {row['configuration']}: https {row['https']} vs http {row['http']} ok req/s (median, min–max), "
            f"https/http {row['ratio']} ({row['change']}); p95 {row['p95']} ms ({row['p95_change']}); {row['verdict']}"
            for row in tls_cost_rows(cells)]
