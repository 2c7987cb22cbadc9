"""Unit tests for `lab demo`: refusals (no lab, a lab before step 5), what each switch writes, what it says."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from lab import demos, faults, workshop
from lab.errors import NeedsStep, UsageError, exit_code_for
from lab.lifecycle import Project
from lab.testing import one_error_line, run_main


class FakeWebTargets:
    """The running lab's web hosts as `lab demo` sees them; records each host's overlay and whether it was closed."""

    made: list["FakeWebTargets"] = []

    def __init__(self, project: Project, webs: int = 2) -> None:
        self.targets = {f"web{i}": SimpleNamespace(name=f"web{i}") for i in range(1, webs + 1)}
        self.topology = SimpleNamespace(serving=lambda scheme: [SimpleNamespace(ip="192.168.56.11")])
        self.closed = False
        FakeWebTargets.made.append(self)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def lab_at(tmp_path, monkeypatch):
    """A lab folder whose steps.json says step K was applied; WebTargets faked; the overlays each host got."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".lab").mkdir()
    FakeWebTargets.made = []
    overlays: dict[str, list] = {}
    monkeypatch.setattr(demos, "WebTargets", FakeWebTargets)
    monkeypatch.setattr(demos.lifecycle, "site_url", lambda topology: "https://192.168.56.11")

    def site_overlay(t, name, values):
        overlays.setdefault(t.name, []).append((name, values))
        return True
    monkeypatch.setattr(demos, "site_overlay", site_overlay)

    def at(step: int | None) -> dict[str, list]:
        if step is not None:
            (tmp_path / ".lab" / workshop.STEPS_FILE).write_text(json.dumps({"applied": step, "snapshots": []}))
        return overlays
    return at


def test_the_demo_switches_every_web_host_to_the_slides_code_and_says_what_to_look_for(lab_at):
    overlays = lab_at(6)
    said: list[str] = []
    lines = demos.shared_nothing(Project.here(), said.append)
    assert overlays == {web: [("antipatterns", {"antipatterns": ["global_balance", "tmp_report"]})]
                        for web in ("web1", "web2")}
    assert said == ["web1: switched to the slides code", "web2: switched to the slides code"]
    assert any("https://192.168.56.11/report/generate/" in line for line in lines)
    assert any("`lab check 5` fails" in line for line in lines)
    assert FakeWebTargets.made[0].closed


def test_undo_removes_the_overlay(lab_at):
    overlays = lab_at(5)
    lines = demos.shared_nothing(Project.here(), lambda message: None, undo=True)
    assert overlays == {"web1": [("antipatterns", {})], "web2": [("antipatterns", {})]}
    assert "`lab check 5` passes" in lines[1]


def test_one_web_host_is_told_why_the_report_still_works(lab_at, monkeypatch):
    lab_at(5)
    monkeypatch.setattr(demos, "WebTargets", lambda project: FakeWebTargets(project, webs=1))
    lines = demos.shared_nothing(Project.here(), lambda message: None)
    assert "`lab up --web=2` shows why it is wrong" in lines[1]


@pytest.mark.parametrize("step", [None, 3])
def test_a_lab_before_step_5_is_refused_and_nothing_is_switched(lab_at, step):
    overlays = lab_at(step)
    with pytest.raises(NeedsStep, match=r"needs the lab at step 5 or later \(it is at (no step yet|step 3)\)") as refused:
        demos.shared_nothing(Project.here(), lambda message: None)
    assert exit_code_for(refused.value) == 74
    assert overlays == {} and FakeWebTargets.made[0].closed


def test_lab_demo_with_no_lab_is_one_line_and_exit_7(capfd, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(["demo", "shared-nothing"], capfd)
    assert code == 7
    assert "run `lab up` first" in one_error_line(err)
    assert not (tmp_path / ".lab").exists()


def test_an_unknown_demo_is_a_usage_error(capfd, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(["demo", "crash-the-bank"], capfd)
    assert code == 2 and "crash-the-bank" in one_error_line(err)


@pytest.fixture
def crash_lab(lab_at, monkeypatch):
    """A running lab at step 5 with `webs` web hosts; the provider's power_off and the load faked; what happened."""
    lab_at(5)
    happened: dict[str, list] = {"powered_off": [], "load": []}

    def make(webs: int = 2, stopped: tuple[str, ...] = ()):
        hosts = [SimpleNamespace(name=f"web{i}") for i in range(1, webs + 1)]
        topology = SimpleNamespace(tier=lambda tier: hosts if tier == "web" else [],
                                   serving=lambda scheme: [SimpleNamespace(ip="192.168.56.11")])
        monkeypatch.setattr(demos.lifecycle, "running_lab", lambda project: ({"provider": "local"}, topology))
        monkeypatch.setattr(demos.lifecycle, "site_url", lambda topology: "https://192.168.56.11")
        monkeypatch.setattr(demos.lifecycle, "ca_file", lambda project: "/lab/ca.crt")
        monkeypatch.setattr(demos.lifecycle, "status", lambda project, services=True: [
            SimpleNamespace(name=h.name, state="stopped" if h.name in stopped else "running") for h in hosts])
        monkeypatch.setattr(demos, "get_provider", lambda name: SimpleNamespace(
            power_off=lambda project, host: happened["powered_off"].append(host)))

        def run_load(url, clients, seconds, during=None, cafile=None):
            happened["load"].append((url, clients, seconds, cafile))
            during(demos.time.monotonic())
            return [faults.Sample(0.0, 0.1, True, "200"), faults.Sample(0.2, 0.3, False, "502"),
                    faults.Sample(9.0, 9.1, True, "200")]
        monkeypatch.setattr(demos.faults, "run_load", run_load)
        return happened
    return make


def test_the_crash_demo_pulls_the_last_web_hosts_plug_under_load_and_counts_what_failed(crash_lab):
    happened = crash_lab()
    said: list[str] = []
    lines = demos.crash(Project.here(), said.append, crash_after=0)
    assert happened["powered_off"] == ["web2"]
    assert happened["load"] == [("https://192.168.56.11/health/", 8, 20.0, "/lab/ca.crt")]
    assert lines[0].startswith("3 requests through the balancer, 1 failed (1× 502, within 0.1 s)")
    assert "`lab status` says web2 is not running" in lines[1]
    assert said[1] == "web2: power off now (8 clients on https://192.168.56.11/health/ meanwhile)"


def test_the_crash_demo_refuses_what_it_cannot_crash_and_powers_nothing_off(crash_lab):
    happened = crash_lab(webs=2, stopped=("web1",))
    with pytest.raises(UsageError, match="db1 is not a web host of this lab; its web hosts: web1, web2"):
        demos.crash(Project.here(), lambda message: None, "db1")
    with pytest.raises(NeedsStep, match="hosts not running: web1; `lab up` boots them first"):
        demos.crash(Project.here(), lambda message: None, "web2")
    happened = crash_lab(webs=1)
    with pytest.raises(NeedsStep, match="needs two web hosts or more"):
        demos.crash(Project.here(), lambda message: None)
    assert happened["powered_off"] == [] and happened["load"] == []


def test_lab_demo_crash_with_no_lab_is_one_line_and_exit_7(capfd, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(["demo", "crash", "web2"], capfd)
    assert code == 7, err
    assert not (tmp_path / ".lab").exists()
