"""Presentation of load-test results: a rich table for the terminal and a JSON-ready dict."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    # Only for annotations: lab.bench imports this module at run time.
    from lab.bench import BenchResult, EndpointStats


def result_to_dict(result: BenchResult) -> dict[str, Any]:
    """A BenchResult as plain JSON types (paths as strings, rows as dicts)."""
    return {
        "requests": result.requests,
        "failures": result.failures,
        "failure_ratio": result.failure_ratio,
        "rps": result.rps,
        "p50_ms": result.p50_ms,
        "p95_ms": result.p95_ms,
        "p99_ms": result.p99_ms,
        "per_endpoint": [row._asdict() for row in result.per_endpoint],
        "errors": [reason._asdict() for reason in result.errors],
        "files": {key: str(Path(path)) for key, path in result.files.items()},
    }


def _failures_cell(failures: int, requests: int) -> Text:
    share = failures / requests if requests else 0.0
    return Text(f"{failures:,} ({share:.1%})", style="red" if failures else "")


def _row(row: EndpointStats) -> list[str | Text]:
    return [
        row.name,
        f"{row.requests:,}",
        _failures_cell(row.failures, row.requests),
        f"{row.rps:,.1f}",
        f"{row.p50_ms:,.0f}",
        f"{row.p95_ms:,.0f}",
        f"{row.p99_ms:,.0f}",
    ]


def bench_table(result: BenchResult) -> Table:
    """One row per endpoint, then the aggregated row; the commonest failure reasons as caption."""
    table = Table(title="Load test", title_justify="left", caption_justify="left")
    table.add_column("Endpoint", overflow="fold")
    for heading in ("Requests", "Failures", "Req/s", "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(heading, justify="right", no_wrap=True)
    for row in result.per_endpoint:
        table.add_row(*_row(row))
    table.add_section()
    table.add_row(
        "Aggregated",
        f"{result.requests:,}",
        _failures_cell(result.failures, result.requests),
        f"{result.rps:,.1f}",
        f"{result.p50_ms:,.0f}",
        f"{result.p95_ms:,.0f}",
        f"{result.p99_ms:,.0f}",
        style="bold",
    )
    if result.errors:
        table.caption = "\n".join(
            f"{reason.occurrences:,} × {reason.name}: {reason.error}" for reason in result.errors[:5]
        )
    return table
