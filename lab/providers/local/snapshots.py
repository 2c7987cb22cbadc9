"""Snapshots of a local lab's hosts (`lab reset --to-step K`): a copy of each host's overlay upper layer.

Every host is an overlayfs over the one cached rootfs, so what makes a host what it is lives in its upper layer.
A snapshot freezes the host (cgroup v2's cgroup.freeze: no process writes meanwhile, so the copy is
crash-consistent, as a power cut would leave it), copies the layer aside and thaws it. A restore stops the host,
swaps the copy in and boots it again through the provider's own `up`, the path that revives a stopped host.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from lab.errors import NoSnapshot, ProviderError
from lab.files import write_atomically
from lab.providers.local import machines
from lab.providers.local.rootfs import rootfs_key

MANIFEST = "manifest.json"  # written last: a snapshot folder without it is incomplete and is never restored
FREEZE_TIMEOUT_S = 20


def snapshots_dir(resources: dict[str, Any]) -> Path:
    """Below the lab's own data folder, so `lab destroy` removes the snapshots with the disks."""
    return Path(resources["root"]) / "snapshots"


def _hosts(state: dict[str, Any]) -> list[machines.MachineSpec]:
    return [machines.MachineSpec(**spec) for spec in (state.get("resources") or {}).get("hosts", {}).values()]


def _copy_tree(source: Path, target: Path) -> None:
    """A copy keeping what overlayfs stores in its upper layer: whiteouts (device nodes), trusted.* xattrs, owners."""
    subprocess.run(["cp", "-a", "--reflink=auto", "--", str(source), str(target)], check=True, capture_output=True,
                   stdin=subprocess.DEVNULL)


def _freeze_file(spec: machines.MachineSpec) -> Path:
    for directory in machines.cgroup_dirs(spec.cgroup):
        if (directory / "cgroup.freeze").exists():  # cgroup v2, or v1's "unified" hierarchy beside it
            return directory / "cgroup.freeze"
    raise ProviderError(f"{spec.name}: this machine has no cgroup v2 freezer, so its hosts cannot be snapshotted")


def _set_frozen(spec: machines.MachineSpec, frozen: bool) -> None:
    freeze = _freeze_file(spec)
    freeze.write_text("1\n" if frozen else "0\n")
    events = freeze.with_name("cgroup.events")
    deadline = time.monotonic() + FREEZE_TIMEOUT_S
    wanted = f"frozen {1 if frozen else 0}"
    while wanted not in events.read_text().splitlines():
        if time.monotonic() > deadline:
            raise ProviderError(f"{spec.name} did not {'freeze' if frozen else 'thaw'} within {FREEZE_TIMEOUT_S} s")
        time.sleep(0.02)


def snapshot(state: dict[str, Any], name: str) -> dict[str, float]:
    """Copy every host's upper layer into snapshots/<name>/ (replacing an older one); seconds each host was frozen."""
    resources = state["resources"]
    folder = snapshots_dir(resources) / name
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    hosts = _hosts(state)

    def copy(spec: machines.MachineSpec) -> float:
        started = time.monotonic()
        _copy_tree(Path(spec.root) / "upper", partial / spec.name)
        return time.monotonic() - started

    # Frozen and thawed by this thread, the copies made by others: a Ctrl-C here still thaws every host on its
    # way out (the command line ends the process without waiting for threads), and leaves only a .partial folder.
    frozen: list[machines.MachineSpec] = []
    try:
        for spec in hosts:
            _set_frozen(spec, True)
            frozen.append(spec)
        with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
            seconds = dict(zip((h.name for h in hosts), pool.map(copy, hosts)))
    finally:
        for spec in frozen:
            _set_frozen(spec, False)
    manifest = {"name": name, "hosts": sorted(seconds), "topology": state["topology"], "rootfs": rootfs_key(),
                "taken_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_atomically(partial / MANIFEST, json.dumps(manifest, indent=2), mode=0o600)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return seconds


def manifest(state: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The snapshot's manifest, or None when there is no complete snapshot of that name."""
    path = snapshots_dir(state.get("resources") or {"root": "/nonexistent"}) / name / MANIFEST
    return json.loads(path.read_text()) if path.exists() else None


def check_restorable(state: dict[str, Any], name: str) -> dict[str, Any]:
    """The snapshot's manifest if it can replace the lab's hosts as they are now; NoSnapshot says why not."""
    found = manifest(state, name)
    if found is None:
        raise NoSnapshot(f"this lab has no snapshot {name!r}")
    now = sorted(h.name for h in _hosts(state))
    if found["hosts"] != now:
        raise NoSnapshot(f"snapshot {name!r} holds hosts {', '.join(found['hosts'])}, the lab now has {', '.join(now)}")
    if found["rootfs"] != rootfs_key():
        raise NoSnapshot(f"snapshot {name!r} was taken over another root filesystem ({found['rootfs']})")
    return found


def restore(state: dict[str, Any], name: str, boot: Callable[[], Any]) -> dict[str, float]:
    """Stop every host, swap its upper layer for the snapshot's copy, then boot() them all; seconds per host swap."""
    check_restorable(state, name)
    folder = snapshots_dir(state["resources"]) / name
    hosts = _hosts(state)

    def swap(spec: machines.MachineSpec) -> float:
        started = time.monotonic()
        machines.stop(spec)  # the state it had is being thrown away: no need for a polite shutdown
        for attempt in range(50):
            if not machines.is_mounted(spec.merged):
                break
            if subprocess.run(["umount", str(spec.merged)], capture_output=True).returncode != 0:
                time.sleep(0.1)
        else:
            raise ProviderError(f"{spec.name}: {spec.merged} is still mounted (busy)")
        for directory in machines.cgroup_dirs(spec.cgroup):
            machines._remove_cgroup_tree(directory)  # the old systemd's groups: the new boot makes its own
        root = Path(spec.root)
        incoming = root / "upper.restoring"
        _remove(incoming)  # what an interrupted restore left
        _copy_tree(folder / spec.name, incoming)  # a copy: the snapshot stays for the next reset
        for part in ("upper", "work"):  # set aside (a rename), removed once the hosts are up again
            if (root / part).exists():
                _remove(root / f"{part}.discarded")
                (root / part).rename(root / f"{part}.discarded")
        incoming.rename(root / "upper")
        (root / "work").mkdir()
        return time.monotonic() - started

    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        seconds = dict(zip((h.name for h in hosts), pool.map(swap, hosts)))
    boot()  # mounts, links and boots each host, then waits for its SSH: the provider's own up
    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        list(pool.map(_remove, [Path(h.root) / f"{part}.discarded" for h in hosts for part in ("upper", "work")]))
    return seconds


def _remove(path: Path) -> None:
    """rm -rf within the one file system (a layer may hold anything a host made, never a mount to follow)."""
    if path.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True, capture_output=True)
