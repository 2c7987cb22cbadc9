"""The local provider's host supervisor: it boots a host again when nspawn says the host rebooted, and only then."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lab.providers.local.machines import MAX_QUICK_REBOOTS, REBOOT_EXIT_CODE, SUPERVISOR, SUPERVISOR_NAME


def supervise(tmp_path: Path, exit_codes: list[int]) -> tuple[int, int, str]:
    """Run the supervisor over a stand-in for nspawn that exits with each code in turn; (exit code, runs, output)."""
    counter = tmp_path / "runs"
    counter.write_text("0")
    codes = " ".join(map(str, exit_codes))
    fake = tmp_path / "fake-nspawn"
    fake.write_text(f"#!/bin/sh\nn=$(cat {counter}); n=$((n + 1)); echo $n > {counter}\n"
                    f"set -- {codes}; shift $((n - 1)); exit ${{1:-0}}\n")
    fake.chmod(0o755)
    done = subprocess.run(["sh", "-c", SUPERVISOR, SUPERVISOR_NAME, str(fake)], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "LAB_CGROUPS": "", "LAB_HOST": "web1"}, timeout=30)
    return done.returncode, int(counter.read_text()), done.stdout


def test_a_reboot_boots_the_host_again_until_it_powers_off(tmp_path: Path) -> None:
    code, runs, output = supervise(tmp_path, [REBOOT_EXIT_CODE, REBOOT_EXIT_CODE, 0])
    assert (code, runs) == (0, 3)
    assert output.count("web1 rebooted itself") == 2


@pytest.mark.parametrize("exit_code", [0, 1, 137])  # a poweroff, a failed boot, a kill from outside
def test_any_other_exit_ends_the_supervisor(tmp_path: Path, exit_code: int) -> None:
    assert supervise(tmp_path, [exit_code, 0])[:2] == (exit_code, 1)


def test_a_host_that_reboots_as_it_boots_is_given_up(tmp_path: Path) -> None:
    code, runs, output = supervise(tmp_path, [REBOOT_EXIT_CODE] * (MAX_QUICK_REBOOTS + 5))
    assert (code, runs) == (REBOOT_EXIT_CODE, MAX_QUICK_REBOOTS + 1)
    assert "rebooted too often" in output


def test_removing_a_host_tolerates_groups_that_vanish_meanwhile(tmp_path: Path, monkeypatch) -> None:
    """The v1 release agent removes empty groups while the lab removes a host's tree (CI once failed on it)."""
    from lab.providers.local import machines
    host = tmp_path / "web3"
    for group in ("payload/user.slice/user-0.slice/user-runtime-dir@0.service", "payload/system.slice", "supervisor"):
        (host / group).mkdir(parents=True)
    (host / "payload/user.slice/user-0.slice/user-runtime-dir@0.service/cgroup.procs").write_text("")
    vanishing = host / "payload/user.slice/user-0.slice/user-runtime-dir@0.service"
    real_rmdir = Path.rmdir

    def rmdir_racing_the_agent(self: Path) -> None:
        if vanishing.exists():  # the agent got there first: the folder is gone before the lab reaches it
            (vanishing / "cgroup.procs").unlink()
            real_rmdir(vanishing)
        real_rmdir(self)

    monkeypatch.setattr(Path, "rmdir", rmdir_racing_the_agent)
    assert machines._pids_below(host) == []
    machines._remove_cgroup_tree(host)
    assert not host.exists()


def test_a_process_that_outlives_sigkill_is_named_with_its_state(monkeypatch):
    from lab.errors import ProviderError
    from lab.providers.local import machines

    spec = machines.MachineSpec("web1", "192.168.56.21", 768, "/nonexistent", "ns", "veth", "lab-x/web1", "/dev/null", "x-web1")
    killed: list[int] = []
    monkeypatch.setattr(machines, "leftover_pids", lambda s: {1, 999_999_999})  # PID 1 never goes; the other is gone
    monkeypatch.setattr(machines.os, "kill", lambda pid, sig: killed.append(pid))
    with pytest.raises(ProviderError, match=r"^web1: processes survived SIGKILL for 0 s: 1 \(\S+, state [A-Z]\), "
                                                    r"999999999 \(gone\)$"):
        machines.stop(spec, timeout=0)
    assert sorted(killed) == [1, 999_999_999]
