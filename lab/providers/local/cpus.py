"""Pinning one local lab's hosts to some of the machine's CPUs (a cpuset of the lab's own), and letting them go."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lab.errors import ProviderError
from lab.providers.local import machines

# cgroup v1 keeps cpusets in a hierarchy of their own, where the hosts have no group (they get one in systemd,
# unified, memory and pids): the lab gets a cpuset group only while it is pinned, and every host process is moved in.
MOVE_PASSES = 5  # a process forked while the others were being moved is caught by the next pass
RELEASE_LIMIT_S = 15.0  # how long letting go may keep retrying while the hosts fork and reap


def lab_group(state: dict[str, Any]) -> str | None:
    """The hosts' common cgroup, relative ("lab-NAME"): its cpuset holds only this lab, never other labs' hosts."""
    for spec in (state.get("resources") or {}).get("hosts", {}).values():
        return str(Path(spec["cgroup"]).parent)
    return None


def host_groups(state: dict[str, Any]) -> list[Path]:
    """Every cgroup directory of every host (each hierarchy lists the same processes; a union misses none)."""
    return [directory for spec in (state.get("resources") or {}).get("hosts", {}).values()
            for directory in machines.cgroup_dirs(spec["cgroup"])]


def pin(state: dict[str, Any], cpus: str | None) -> None:
    """Put every process of the lab's hosts on `cpus`; None takes the restriction away."""
    root = machines.CGROUP_ROOT
    group = lab_group(state)
    if group is None:
        return
    if (root / "cgroup.controllers").exists():
        _pin_v2(root, root / group, cpus)
    elif (root / "cpuset" / "cgroup.procs").exists():
        _pin_v1(root / "cpuset", group, cpus, host_groups(state))
    elif cpus is not None:  # without cpusets nothing was pinned: letting go is done
        raise ProviderError("this machine has no cpuset cgroup controller: run the bench with --shared-cpus")


def _pin_v2(root: Path, group: Path, cpus: str | None) -> None:
    """cgroup v2: the lab's own group restricts every host below it (its cpuset controller enabled by the root)."""
    if not group.is_dir():
        return
    if cpus is not None and "cpuset" not in (root / "cgroup.subtree_control").read_text().split():
        _write(root / "cgroup.subtree_control", "+cpuset")
    knob = group / "cpuset.cpus"
    if knob.exists():
        _write(knob, cpus or "")  # empty: the parent's CPUs, i.e. all of them


def _pin_v1(hierarchy: Path, group_name: str, cpus: str | None, hosts: list[Path]) -> None:
    group = hierarchy / group_name
    if cpus is None:
        _release_v1(hierarchy, group)
        return
    group.mkdir(exist_ok=True)
    _write(group / "cpuset.mems", (hierarchy / "cpuset.mems").read_text().strip())
    _write(group / "cpuset.cpus", cpus)
    for _ in range(MOVE_PASSES):
        inside = set(_pids(group / "cgroup.procs"))
        outside = {pid for host in hosts if host.is_dir() for procs in host.rglob("cgroup.procs")
                   for pid in _pids(procs) if pid not in inside}
        if not outside:
            return
        for pid in sorted(outside):
            _move(pid, group / "cgroup.procs")


def _release_v1(hierarchy: Path, group: Path) -> None:
    """Every process back in the root cpuset (all CPUs), and the lab's cpuset group gone."""
    deadline = time.monotonic() + RELEASE_LIMIT_S
    while time.monotonic() < deadline:
        if not group.is_dir():
            return
        for pid in _pids(group / "cgroup.procs"):
            _move(pid, hierarchy / "cgroup.procs")
        try:
            group.rmdir()
            return
        except OSError:
            # A process forked meanwhile (an app server restarting its workers), or one exited and is not reaped
            # yet (a zombie cannot be moved, and keeps the group busy): try again in a moment.
            time.sleep(0.1)
    raise ProviderError(f"could not take the lab's hosts out of cpuset {group}: processes keep appearing in it")


def _pids(procs: Path) -> list[int]:
    try:
        return [int(p) for p in procs.read_text().split()]
    except OSError:
        return []


def _move(pid: int, procs: Path) -> None:
    try:
        procs.write_text(f"{pid}\n")
    except ProcessLookupError:
        pass  # it exited meanwhile
    except OSError as error:
        if error.errno != 3:  # ESRCH
            raise ProviderError(f"could not move process {pid} into {procs.parent}: {error.strerror}") from None


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value + "\n" if value else "\n")
    except OSError as error:
        raise ProviderError(f"could not write {value!r} to {path}: {error.strerror}") from None
