"""lab up refuses hosts whose memory the machine does not have available, before anything is made."""

from __future__ import annotations

from pathlib import Path

from lab import lifecycle
from lab.system import available_memory_mb
from lab.testing import run_main
from lab.topology import Overrides, resolve


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_available_memory_is_memavailable_in_mb(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24576000 kB\nMemFree:         1000000 kB\nMemAvailable:   20480000 kB\n")
    assert available_memory_mb(meminfo) == 20000


def test_only_the_hosts_the_lab_does_not_have_yet_are_counted() -> None:
    topology = resolve({}, {}, Overrides(web=3), platform="linux")
    existing = {"topology": {"hosts": [{"name": "lb1"}, {"name": "web1"}, {"name": "db1"}]}}
    assert lifecycle.memory_wanted(topology, existing) == {"web2": 768, "web3": 768}
    assert sum(lifecycle.memory_wanted(topology, None).values()) == 512 + 3 * 768 + 768


def test_a_preset_bigger_than_the_machine_is_refused_in_one_line_and_nothing_is_made(no_lab, capfd, monkeypatch):
    monkeypatch.setattr(lifecycle, "available_memory_mb", lambda: 1500)
    code, out, err = run_main(["up", "--preset", "full"], capfd)
    line = one_error_line(err)
    assert code == 77
    topology = resolve({}, {}, Overrides(preset="full"), platform="linux")
    needed = sum(h.memory_mb for h in topology.hosts)
    assert f"the {len(topology.hosts)} hosts to make need {needed:,} MB of memory and this machine has 1,500 MB " \
        "available: fewer hosts" in line
    assert not (no_lab / ".lab" / "state.json").exists()


def test_a_lab_that_fits_is_not_refused(monkeypatch) -> None:
    monkeypatch.setattr(lifecycle, "available_memory_mb", lambda: 2048)
    lifecycle.check_memory(resolve({}, {}, Overrides(), platform="linux"), None)  # lb 512 + web 768 + db 768
