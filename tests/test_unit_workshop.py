"""Unit tests for workshop mode: steps, hints, the snapshot hook, `lab reset` refusals, local and Vagrant snapshots."""

from __future__ import annotations

import ast
import json
import os
from dataclasses import asdict
from pathlib import Path

import pytest

from lab import workshop
from lab.errors import NoSnapshot, ProviderError, SnapshotsUnsupported, UsageError, exit_code_for
from lab.lifecycle import Project
from lab.providers.local import machines, snapshots
from lab.providers.vagrant.driver import VagrantDriver
from lab.recipes import PROVISION_DIR, ConvergeReport, RecipeResult
from lab.testing import linux_topology, one_error_line, run_main


def test_a_step_that_does_not_exist_is_a_usage_error():
    with pytest.raises(UsageError, match="there is no step 9; the workshop's steps: 1 bootstrap"):
        workshop.require_step(9)
    with pytest.raises(UsageError):
        workshop.require_step(0)  # bare hosts are a place to reset to, not a step to check
    workshop.require_step(0, bare=True)
    workshop.require_step(3)


def test_lab_check_9_is_one_line_and_exit_2(capfd, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(["check", "9"], capfd)
    assert code == 2
    assert "there is no step 9" in one_error_line(err)
    assert not (tmp_path / ".lab").exists()  # nothing made


def test_why_keeps_the_assertion_and_its_first_where():
    message = ("AssertionError: assert False\n +  where False = <service nftables>.is_enabled\n"
               " +    where <service nftables> = <class 'SystemdService'>('nftables')")
    assert workshop.why_failed(message) == "assert False + where False = <service nftables>.is_enabled"


def test_why_names_the_command_testinfra_ran_and_what_it_said():
    message = ("RuntimeError: Unexpected output CommandResult(backend=<SshBackend object at 0x7f>, exit_status=1, "
               "command=b'cat -- /etc/hosts', _stdout=b'', _stderr=b'cat: /etc/hosts: No such file or directory\\n')")
    assert workshop.why_failed(message) == "`cat -- /etc/hosts` exited 1: cat: /etc/hosts: No such file or directory"


def test_why_names_the_command_inside_sudos_shell_without_its_quoting():
    result = ("CommandResult(backend=<SshBackend object at 0x7f>, "
              "exit_status=1, command=b'sudo -u postgres /bin/sh -c \\'psql -tAc \\'\"\\'\"\\'SELECT rolsuper FROM pg_roles"
              "\\'\"\\'\"\\'\\'', _stdout=b'', _stderr=b'psql: error: connection to server on socket failed\\n"
              "\\tIs the server running locally?\\n')")
    message = f"AssertionError: Unexpected exit code 1 for {result}\nassert 1 in (0,)\n +  where 1 = {result[:40]}....rc"
    assert workshop.why_failed(message) == ("`psql -tAc 'SELECT rolsuper FROM pg_roles'` exited 1: "
                                            "Is the server running locally?")


def test_why_is_the_checks_own_message_last_line_not_a_traceback_nor_a_cut_command():
    message = ("AssertionError: nothing answers http://192.168.57.21:8000/health/: Traceback (most recent call last):\n"
               "  File \"<string>\", line 3, in <module>\n    with opener.open(sys.argv[1]) as response:\n"
               "         ^^^^^^^^^^^^\nConnectionRefusedError: [Errno 111] Connection refused\n"
               "assert 1 == 0\n +  where 1 = CommandResult(backend=<x>, exit_status=1, command=b'cd /srv/ba...-u bank ...').rc")
    assert workshop.why_failed(message) == "ConnectionRefusedError: [Errno 111] Connection refused"


def test_why_is_one_short_line():
    why = workshop.why_failed("assert " + "x" * 500 + "\n and more")
    assert len(why) == 200 and "\n" not in why and why.endswith("…")


def test_a_hint_comes_from_the_check_modules_hints_else_the_steps_way_out():
    class Module:
        HINTS = {"test_nginx_enabled_and_running": "`systemctl enable --now nginx`"}

    assert workshop.hint_for(Module, "test_nginx_enabled_and_running", "step5_balancer") == "`systemctl enable --now nginx`"
    assert workshop.hint_for(Module, "test_other", "step5_balancer") == (
        "see docs/steps/ for step 5, or `lab solve 5` to have the lab do it")


def check_modules() -> list[Path]:
    return sorted(PROVISION_DIR.glob("step*/test_*.py"))


@pytest.mark.parametrize("path", check_modules(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_check_has_one_hint_line(path):
    """`lab check` prints what to try for each failing check: every check function has its own line in HINTS."""
    tree = ast.parse(path.read_text())
    checks = {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}
    hints = next((ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                  and any(getattr(t, "id", "") == "HINTS" for t in node.targets)), {})
    assert set(hints) == checks, f"checks without a hint: {sorted(checks - set(hints))}, hints without a check: {sorted(set(hints) - checks)}"
    for check, hint in hints.items():
        assert hint.strip() and "\n" not in hint and len(hint) < 160, check


# -- the snapshot hook of lab up / lab solve -----------------------------------------------------------------

class FakeProvider:
    name = "fake"

    def __init__(self, unsupported: bool = False) -> None:
        self.unsupported = unsupported
        self.snapshots: list[str] = []
        self.restored: list[str] = []

    def snapshot(self, project, name):
        if self.unsupported:
            raise SnapshotsUnsupported("no snapshots here")
        self.snapshots.append(name)
        return {"web1": 0.5}

    def restore(self, project, name, say=lambda m: None):
        self.restored.append(name)
        return {"web1": 1.5}


def a_project(tmp_path: Path, status: str = "up") -> Project:
    project = Project.here(tmp_path, environ={})
    project.labdir.ensure()
    state = project.labdir.new_state(linux_topology())
    state["status"] = status
    project.labdir.write(state)
    return project


def report(changes: int) -> ConvergeReport:
    return ConvergeReport([RecipeResult("web1", "step1_bootstrap.release", 1, "changed" if changes else "ok",
                                        ["x"] * changes)], 1.0)


def last_step_folder() -> int:
    """The highest N of the provision/stepN_* folders, read from the folders themselves (not from lab.workshop)."""
    return max(int(folder.name.removeprefix("step").split("_", 1)[0]) for folder in PROVISION_DIR.glob("step*_*")
               if folder.is_dir())


def test_a_completed_step_is_recorded_and_snapshotted(tmp_path):
    project, provider = a_project(tmp_path), FakeProvider()
    workshop.step_completed(project, provider, 2, report(3), lambda m: None)
    assert provider.snapshots == ["step-2"]
    assert workshop.progress(project) == {"applied": 2, "snapshots": [2]}
    last = last_step_folder()
    assert last > 2
    workshop.step_completed(project, provider, None, report(3), lambda m: None)  # a plain `lab up`: every step
    assert provider.snapshots == ["step-2", f"step-{last}"]
    assert workshop.progress(project) == {"applied": last, "snapshots": [2, last]}


def test_a_lab_past_the_step_is_not_snapshotted_as_that_step(tmp_path):
    project, provider = a_project(tmp_path), FakeProvider()
    workshop.step_completed(project, provider, 5, report(3), lambda m: None)
    said = []
    workshop.step_completed(project, provider, 2, report(0), said.append)  # `lab up --step 2` on a step-5 lab
    assert provider.snapshots == ["step-5"]
    assert workshop.progress(project)["applied"] == 5
    assert "past step 2" in said[0]


def test_a_converge_that_changed_nothing_keeps_its_snapshot(tmp_path):
    project, provider = a_project(tmp_path), FakeProvider()
    workshop.step_completed(project, provider, 3, report(4), lambda m: None)
    workshop.step_completed(project, provider, 3, report(0), lambda m: None)
    assert provider.snapshots == ["step-3"]


def test_a_provider_without_snapshots_still_records_the_step(tmp_path):
    project = a_project(tmp_path)
    workshop.step_completed(project, FakeProvider(unsupported=True), 3, report(1), lambda m: None)
    assert workshop.progress(project) == {"applied": 3, "snapshots": []}


def test_reset_to_a_step_the_lab_never_reached_changes_nothing(tmp_path, monkeypatch):
    project, provider = a_project(tmp_path), FakeProvider()
    monkeypatch.setattr(workshop, "get_provider", lambda name: provider)
    workshop.step_completed(project, provider, 2, report(1), lambda m: None)
    before = (project.labdir.path / workshop.STEPS_FILE).read_text()
    with pytest.raises(NoSnapshot, match="never at the end of step 4 .it got to step 2.") as error:
        workshop.reset(project, 4, lambda m: None)
    assert exit_code_for(error.value) == 71
    assert provider.restored == []
    assert (project.labdir.path / workshop.STEPS_FILE).read_text() == before


def test_reset_restores_the_snapshot_and_records_the_step(tmp_path, monkeypatch):
    project, provider = a_project(tmp_path), FakeProvider()
    monkeypatch.setattr(workshop, "get_provider", lambda name: provider)
    monkeypatch.setattr(workshop.lifecycle, "close_ssh_masters", lambda labdir, hosts: None)
    waited = []  # the reset is done once the hosts have booted, not when SSH first answers
    monkeypatch.setattr(workshop.lifecycle, "wait_until_booted",
                        lambda labdir, hosts: waited.append((list(provider.restored), sorted(hosts))))
    workshop.step_completed(project, provider, 2, report(1), lambda m: None)
    workshop.step_completed(project, provider, 5, report(1), lambda m: None)
    assert workshop.reset(project, 2, lambda m: None) == {"web1": 1.5}
    assert provider.restored == ["step-2"]
    assert waited == [(["step-2"], sorted(h.name for h in project.labdir.topology().hosts))]
    assert workshop.progress(project) == {"applied": 2, "snapshots": [2, 5]}  # step 5 can be come back to


def test_reset_of_a_lab_that_is_not_up_is_not_up(tmp_path):
    project = Project.here(tmp_path, environ={})
    with pytest.raises(Exception) as error:
        workshop.reset(project, 2, lambda m: None)
    assert exit_code_for(error.value) == 7


# -- local snapshots: copies of the overlay upper layers -----------------------------------------------------

def local_state(tmp_path: Path, names=("web1", "db1")) -> dict:
    hosts = {}
    for name in names:
        root = tmp_path / "hosts" / name
        if not root.exists():
            (root / "upper" / "etc").mkdir(parents=True)
            (root / "work").mkdir()
            (root / "upper" / "etc" / "hostname").write_text(f"{name}\n")
            os.symlink("/srv/bank/releases/aaa", root / "upper" / "current")
        hosts[name] = asdict(machines.MachineSpec(name, "192.168.56.21", 512, str(root), f"ns-{name}", f"v-{name}",
                                                  f"lab-x/{name}", str(tmp_path / f"{name}.log"), f"x-{name}"))
    return {"resources": {"root": str(tmp_path), "hosts": hosts}, "topology": {"hosts": [{"name": n} for n in names]}}


@pytest.fixture
def fake_machines(monkeypatch):
    """Hosts that freeze, stop and unmount on paper: the copies and swaps of their layers are real."""
    events = []
    monkeypatch.setattr(snapshots, "_set_frozen", lambda spec, frozen: events.append(("frozen" if frozen else "thawed", spec.name)))
    monkeypatch.setattr(machines, "stop", lambda spec: events.append(("stopped", spec.name)))
    monkeypatch.setattr(machines, "is_mounted", lambda path: False)
    monkeypatch.setattr(machines, "cgroup_dirs", lambda relative: [])
    return events


def test_a_snapshot_copies_each_frozen_hosts_layer_and_a_restore_swaps_it_back(tmp_path, fake_machines):
    state = local_state(tmp_path)
    seconds = snapshots.snapshot(state, "step-2")
    assert set(seconds) == {"web1", "db1"}
    assert sorted(fake_machines) == sorted([("frozen", "web1"), ("thawed", "web1"), ("frozen", "db1"), ("thawed", "db1")])
    manifest = json.loads((tmp_path / "snapshots" / "step-2" / snapshots.MANIFEST).read_text())
    assert manifest["hosts"] == ["db1", "web1"]
    # What the attendee did afterwards: a new file, a changed one, a leftover in overlayfs's work dir.
    upper = tmp_path / "hosts" / "web1" / "upper"
    (upper / "etc" / "nginx.conf").write_text("later\n")
    (upper / "etc" / "hostname").write_text("changed\n")
    (tmp_path / "hosts" / "web1" / "work" / "leftover").write_text("x")
    booted = []
    snapshots.restore(state, "step-2", lambda: booted.append(True))
    assert booted == [True]
    assert ("stopped", "web1") in fake_machines and ("stopped", "db1") in fake_machines
    assert (upper / "etc" / "hostname").read_text() == "web1\n"
    assert not (upper / "etc" / "nginx.conf").exists()
    assert os.readlink(upper / "current") == "/srv/bank/releases/aaa"  # symlinks stay links
    assert list((tmp_path / "hosts" / "web1" / "work").iterdir()) == []
    assert (tmp_path / "snapshots" / "step-2" / "web1" / "etc" / "hostname").exists()  # kept for the next reset


def test_a_restore_refuses_a_snapshot_of_other_hosts_before_stopping_any(tmp_path, fake_machines):
    snapshots.snapshot(local_state(tmp_path / "before", ("web1",)), "step-2")
    state = local_state(tmp_path / "before", ("web1", "web2"))  # the lab grew since: web2 has no snapshot
    fake_machines.clear()
    with pytest.raises(NoSnapshot, match="holds hosts web1, the lab now has web1, web2"):
        snapshots.restore(state, "step-2", lambda: None)
    assert fake_machines == []


def test_an_incomplete_snapshot_is_no_snapshot(tmp_path, fake_machines):
    state = local_state(tmp_path)
    snapshots.snapshot(state, "step-3")
    (tmp_path / "snapshots" / "step-3" / snapshots.MANIFEST).unlink()
    with pytest.raises(NoSnapshot, match="no snapshot 'step-3'"):
        snapshots.restore(state, "step-3", lambda: None)


# -- Vagrant: its own snapshots, behind the driver ------------------------------------------------------------

class FakeVagrant:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def _call_vagrant_command(self, args):
        self.calls.append(args)


def test_vagrant_snapshots_save_with_force_and_restore_without_provisioning(tmp_path):
    driver = VagrantDriver.__new__(VagrantDriver)  # no vagrant on this machine needed: the command line is the unit
    driver.log, driver._vagrant = tmp_path / "vagrant.log", FakeVagrant()
    driver.snapshot("save", "step-2")
    driver.snapshot("restore", "step-2")
    assert driver._vagrant.calls == [["snapshot", "save", "--force", "step-2"],
                                     ["snapshot", "restore", "--no-provision", "step-2"]]


def test_a_snapshot_that_fails_or_is_interrupted_thaws_every_host_and_leaves_no_snapshot(tmp_path, fake_machines,
                                                                                        monkeypatch):
    def interrupted(source, target):
        raise KeyboardInterrupt

    monkeypatch.setattr(snapshots, "_copy_tree", interrupted)
    with pytest.raises(KeyboardInterrupt):
        snapshots.snapshot(local_state(tmp_path), "step-2")
    assert sorted(e for e in fake_machines if e[0] == "thawed") == [("thawed", "db1"), ("thawed", "web1")]
    assert snapshots.manifest({"resources": {"root": str(tmp_path)}}, "step-2") is None


def test_waiting_for_the_boot_names_the_hosts_that_did_not_finish(tmp_path, monkeypatch):
    answers = {"web1": "running", "db1": "degraded", "lb1": "starting"}

    class Host:
        def __init__(self, labdir, name):
            self.name = name

        def run(self, command, timeout=None):
            assert command == "systemctl is-system-running --wait"
            return type("Result", (), {"stdout": answers[self.name] + "\n"})()

    monkeypatch.setattr(workshop.lifecycle, "RemoteHost", Host)
    workshop.lifecycle.wait_until_booted(None, ["web1", "db1"])  # degraded: booted, a unit failed (checks say which)
    with pytest.raises(ProviderError, match=r"did not finish booting within 120 s: lb1 \(starting\)$"):
        workshop.lifecycle.wait_until_booted(None, ["web1", "lb1"])
