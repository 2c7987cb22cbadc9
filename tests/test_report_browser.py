"""The bench report opened in real headless Chromium: its charts are there, laid out and actually painted."""
from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from lab.bench.matrix import Cell, CellReport, Run
from lab.bench.html import PALETTE, render

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    if os.environ.get("CI"):
        raise RuntimeError("Chromium is missing: test.sh installs it (apt package chromium)")
    pytest.skip("Chromium is not installed (./test.sh installs it)", allow_module_level=True)

WINDOW = (1000, 2400)


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    # No network at all: the page must be self-contained, and nothing may leave this machine.
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic", "--proxy-server=127.0.0.1:9",
         f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}", *args],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB(A) rows of an 8-bit non-interlaced PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, compressed, header = 8, b"", None
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            compressed += body
        position += 12 + length
    width, height, depth, colour, _, _, interlace = header  # type: ignore[misc]
    assert depth == 8 and interlace == 0 and colour in (2, 6)
    channels = 4 if colour == 6 else 3
    raw, stride, rows, previous = zlib.decompress(compressed), width * channels, [], bytearray(width * channels)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                estimate = left + up - corner
                nearest = min((abs(estimate - left), 0, left), (abs(estimate - up), 1, up), (abs(estimate - corner), 2, corner))
                line[i] = (line[i] + nearest[2]) & 255
        rows.append(bytes(line))
        previous = line
    if channels == 4:  # drop alpha: callers compare RGB
        rows = [b"".join(row[x:x + 3] for x in range(0, stride, 4)) for row in rows]
    return width, height, rows


def count_colour(rows: list[bytes], hex_colour: str) -> int:
    rgb = bytes.fromhex(hex_colour.lstrip("#"))
    return sum(1 for row in rows for x in range(0, len(row), 3) if row[x:x + 3] == rgb)


def a_cell(server: str, rps: list[float]) -> CellReport:
    runs = [Run(settled=True, reason="", rps=r, p50_ms=20, p95_ms=60 + r / 50, p99_ms=90, failure_pct=0,
                requests=int(r * 10), failures=0, stale=0, checked=0, hosts={"web1": int(r * 5), "web2": int(r * 5)},
                errors=[], generator_cores=0.5, machine_busy=0.95, host_cores={"web1": 0.6},
                timeline=[(t, r * (0.5 if t < 2 else 1), 50 + t) for t in range(11)]) for r in rps]
    return CellReport(Cell(server, 2, 2, 1), settings={}, runs=runs, bottleneck="machine CPU")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    page = folder / "report.html"
    page.write_text(render([a_cell("gunicorn", [1000, 1100, 1050]), a_cell("mod_wsgi", [900, 980, 940])], "lab bench — browser test", {"machine": {"cores": 2}}))
    return page


def test_charts_are_in_the_rendered_dom(report: Path, tmp_path: Path) -> None:
    result = chromium("--dump-dom", report.as_uri(), profile=tmp_path / "profile")
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    charts = re.findall(r"<svg class=\"chart[^\"]*\"[^>]*>(.*?)</svg>", dom, re.S)
    assert len(charts) == 4  # req/s and p95 bars, req/s and p95 over time
    for chart in charts[:2]:
        widths = [float(w) for w in re.findall(r'<rect class="bar"[^>]*width="([0-9.]+)"', chart)]
        assert len(widths) == 2 and all(w > 10 for w in widths)
    for chart in charts[2:]:
        lines = re.findall(r'<polyline class="series" points="([^"]+)"', chart)
        assert len(lines) == 2 and all(len(points.split()) == 11 for points in lines)


def test_charts_are_painted(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    result = chromium(f"--screenshot={shot}", report.as_uri(), profile=tmp_path / "profile")
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    width, height, rows = png_pixels(shot.read_bytes())
    assert (width, height) == WINDOW
    # Each cell's colour fills its two bars (22 px high, hundreds wide): thousands of pixels, not a stray line.
    for colour in PALETTE[:2]:
        assert count_colour(rows, colour) > 5000, f"{colour} is hardly on the page: the bars were not painted"
