"""lab bench on a real lab (lb1 + web1..2 + db1): one window, every web host served, and Ctrl-C keeps what was measured."""
from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from lab.testing import ScratchLab, needs_root, scratch_lab

NAME = os.environ.get("TEST_LAB_NAME", "labbench")  # its own name and subnet: other labs on this machine must not matter
pytestmark = pytest.mark.integration
needs_root()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    with scratch_lab(NAME, range(40, 60), folder=tmp_path_factory.mktemp("bench")) as the_lab:
        the_lab.ok("up", "--web=2")
        yield the_lab


def latest_run(lab: ScratchLab) -> Path:
    return sorted((lab.folder / ".lab" / "results").iterdir())[-1]


def test_ctrl_c_during_the_second_cell_keeps_the_first(lab: ScratchLab) -> None:
    process = subprocess.Popen(
        lab.command("bench", "--scenario", "hello", "--workers", "2,3", "--users", "10", "--duration", "5",
                    "--warmup", "2", "--repeats", "2"),
        cwd=lab.folder, env=lab.env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )
    lines = []
    interrupted = False
    for line in process.stdout:  # type: ignore[union-attr]
        lines.append(line)
        if "workers=3" in line and "warm-up" in line and not interrupted:
            # One Ctrl-C while the second configuration warms up. Once: the line can come out twice (rich writes
            # its buffer again when the interrupt landed between writing it and clearing it), and a second Ctrl-C
            # means "leave the lab as it is", another scenario.
            process.send_signal(signal.SIGINT)
            interrupted = True
    stderr = process.stderr.read()  # type: ignore[union-attr]
    assert process.wait(180) == 130, "".join(lines) + stderr
    assert "Traceback" not in stderr
    saved = json.loads((latest_run(lab) / "results.json").read_text())
    assert saved["complete"] is False and saved["incomplete"].startswith("interrupted")
    [first] = saved["cells"]
    assert first["cell"]["workers"] == 2 and first["error"] is None
    runs = first["runs"]
    assert len(runs) == 2 and all(r["settled"] for r in runs), runs
    # One window: requests/s is the window's successful requests over its seconds, and every web host served in it.
    for run in runs:
        assert run["rps"] > 0 and run["failures"] == 0
        assert sum(run["hosts"].get(web, 0) for web in ("web1", "web2")) == run["requests"]
        assert sum(point[1] for point in run["timeline"]) == run["requests"]
    assert first["hosts"]["web1"] > 0 and first["hosts"]["web2"] > 0 and first["idle_hosts"] == []
    page = (latest_run(lab) / "report.html").read_text()
    assert 'id="incomplete"' in page and "gunicorn web×2 workers=2" in page
    assert "the lab is back as it was" in "".join(lines), "".join(lines) + stderr
    assert lab.state["topology"]["appserver"]["workers"] == 2


def test_a_whole_bench_conserves_money_and_names_its_limit(lab: ScratchLab) -> None:
    output = lab.ok("bench", "--scenario", "hello", "--users", "10", "--duration", "5", "--warmup", "2",
                    "--repeats", "2", "--max-failed-pct", "1", timeout=300)
    assert "money conserved" in output
    saved = json.loads((latest_run(lab) / "results.json").read_text())
    assert saved["complete"] is True and saved["money"]["conserved"] is True
    [cell] = saved["cells"]
    assert cell["median"]["rps"] > 0 and cell["median"]["failure_pct"] <= 1
    # the hosts' share of the machine's cores: 1 of 2 when the bench splits them, all of them with --shared-cpus
    limits = {"load generator", "web tier", "lb tier", "db tier", "the machine's CPUs", "closed loop",
              *(f"the hosts' {n} core(s)" for n in range(1, (os.cpu_count() or 1) + 1))}
    assert cell["bottleneck"].split(":")[0] in limits, cell["bottleneck"]


def test_the_cost_of_tls_is_measured_on_hello(lab: ScratchLab) -> None:
    refused = lab.run("bench", "--scheme", "http", "--scenario", "mix")
    assert refused.returncode == 2 and "Secure cookies" in refused.stderr and refused.stderr.count("\n") == 1
    lab.ok("bench", "--scenario", "hello", "--scheme", "http,https", "--users", "10", "--duration", "5",
           "--warmup", "2", "--repeats", "2", "--max-failed-pct", "1", timeout=300)
    cells = json.loads((latest_run(lab) / "results.json").read_text())["cells"]
    assert [c["cell"]["scheme"] for c in cells] == ["http", "https"]
    plain, tls = (c["settings"]["target"] for c in cells)
    assert plain.startswith("http://") and plain.endswith(":8080") and tls.startswith("https://")
    for cell in cells:  # both measured the site itself (not 301s): every request answered by a web host
        assert cell["error"] is None and cell["median"]["rps"] > 0 and cell["median"]["failure_pct"] == 0
        assert all(sum(r["hosts"].get(web, 0) for web in ("web1", "web2")) == r["requests"] for r in cell["runs"])
