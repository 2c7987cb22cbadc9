"""One local host: an overlayfs disk over the cached rootfs, booted by systemd-nspawn in its own cgroup and netns."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from lab.errors import ProviderError
from lab.files import write_atomically
from lab.system import run

CGROUP_ROOT = Path("/sys/fs/cgroup")
# v1 hierarchies a host gets its own group in: nspawn needs name=systemd (and unified) of its own,
# memory and pids let the lab cap and count a host.
V1_HIERARCHIES = ("systemd", "unified", "memory", "pids")


# systemd-nspawn exits with this code when the host asked for a reboot (systemd-nspawn@.service restarts on it too).
REBOOT_EXIT_CODE = 133
MAX_QUICK_REBOOTS = 5  # reboots within a minute before the supervisor gives up (a host that reboots as it boots)
SUPERVISOR_NAME = "lab-host-supervisor"
# The supervisor joins the host's cgroups first, so nspawn starts (and stays) in the host's own group: this machine's
# PID 1 is not systemd, so nothing else would give it one. It then boots the host again each time nspawn exits
# because the host rebooted itself, as a VM's firmware would; any other exit (a poweroff, a kill from outside)
# ends it, and the host is stopped until `lab up`. Its netns, veth and address live outside nspawn and stay.
SUPERVISOR = (
    'for g in $LAB_CGROUPS; do echo $$ > "$g/cgroup.procs" || exit 97; done\n'
    'quick=0; since=$(date +%s)\n'
    'while :; do\n'
    '  "$@"; code=$?\n'
    f'  [ $code -eq {REBOOT_EXIT_CODE} ] || exit $code\n'
    '  now=$(date +%s); if [ $((now - since)) -gt 60 ]; then quick=0; since=$now; fi\n'
    f'  quick=$((quick + 1)); [ $quick -le {MAX_QUICK_REBOOTS} ] || {{ echo "lab: $LAB_HOST rebooted too often"; exit $code; }}\n'
    '  echo "lab: $LAB_HOST rebooted itself; booting it again"\n'
    'done\n'
)


@dataclass(frozen=True)
class MachineSpec:
    """Everything needed to make, boot and remove one host; all of it is stored in the state file."""

    name: str
    ip: str
    memory_mb: int
    root: str  # per-host folder holding upper/, work/, merged/
    netns: str
    veth: str
    cgroup: str  # relative path, the same under every hierarchy
    console_log: str
    machine: str  # nspawn's machine name: unique on this machine (it names /run/systemd/nspawn/propagate/...)

    @property
    def merged(self) -> Path:
        return Path(self.root) / "merged"


def cgroup_dirs(relative: str) -> list[Path]:
    if (CGROUP_ROOT / "cgroup.controllers").exists():  # a pure cgroup v2 machine
        return [CGROUP_ROOT / relative]
    return [CGROUP_ROOT / h / relative for h in V1_HIERARCHIES if (CGROUP_ROOT / h / "cgroup.procs").exists()]


def is_mounted(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mountinfo") as mounts:
        return any(line.split()[4] == target for line in mounts)


def ensure_disk(spec: MachineSpec, rootfs: Path) -> None:
    root = Path(spec.root)
    for part in ("upper", "work", "merged"):
        (root / part).mkdir(parents=True, exist_ok=True)
    if not is_mounted(spec.merged):
        run([
            "mount", "-t", "overlay", "overlay", "-o",
            f"lowerdir={rootfs},upperdir={root / 'upper'},workdir={root / 'work'}", str(spec.merged),
        ])


def write_if_changed(path: Path, content: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text() == content and (path.stat().st_mode & 0o777) == mode:
        return
    write_atomically(path, content, mode)


def ensure_identity(spec: MachineSpec, authorized_key: str) -> str:
    """Hostname, root's authorized key and a host key of its own; returns the public host key."""
    etc = spec.merged / "etc"
    write_if_changed(etc / "hostname", spec.name + "\n")
    write_if_changed(spec.merged / "root/.ssh/authorized_keys", authorized_key + "\n", 0o600)
    os.chmod(spec.merged / "root/.ssh", 0o700)
    write_if_changed(
        etc / "ssh/sshd_config.d/lab.conf",
        "# lab: key-only logins on the lab network\n"
        "HostKey /etc/ssh/ssh_host_ed25519_key\n"
        f"ListenAddress {spec.ip}\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\n"
        "UseDNS no\n",
    )
    key = etc / "ssh/ssh_host_ed25519_key"
    if not key.exists():
        made = key.with_name("lab-new-host-key")
        for leftover in (made, made.with_suffix(".pub")):
            leftover.unlink(missing_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", spec.name, "-f", str(made)])
        os.replace(made.with_suffix(".pub"), key.with_suffix(".pub"))
        os.replace(made, key)
    public = key.with_suffix(".pub").read_text().split()
    return f"{public[0]} {public[1]}"


def running_pid(spec: MachineSpec) -> int | None:
    """The process that keeps this host running: its supervisor (which boots it again after an in-host reboot),
    else its nspawn (a host booted before supervisors), found through its cgroup (a pid file may be stale)."""
    found = None
    for directory in cgroup_dirs(spec.cgroup):
        for pid in _pids_below(directory):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"--directory={spec.merged}".encode() not in cmdline or _is_zombie(pid):
                continue
            if SUPERVISOR_NAME.encode() in cmdline[:5]:
                return pid
            if cmdline[0].endswith(b"systemd-nspawn"):
                found = pid
    return found


def boot(spec: MachineSpec, binds: dict[str, str]) -> int:
    """Start the host's supervisor detached, inside a fresh cgroup: systemd-nspawn with real systemd as the host's
    PID 1, booted again when the host reboots itself. Returns the supervisor's pid."""
    groups = cgroup_dirs(spec.cgroup)
    for directory in groups:
        directory.mkdir(parents=True, exist_ok=True)
    _limit_memory(groups, spec.memory_mb)
    command = [
        "systemd-nspawn", "--boot", "--register=no", "--keep-unit", "--quiet",
        f"--directory={spec.merged}", f"--machine={spec.machine}", f"--hostname={spec.name}",
        f"--network-namespace-path=/run/netns/{spec.netns}",
        "--resolv-conf=off", "--timezone=off", "--link-journal=no", "--console=read-only",
        # The host's own firewall (nftables) needs NET_ADMIN; it only reaches the host's own namespace.
        "--capability=CAP_NET_ADMIN",
        # Read-only: a host must not change what another host installs (the machine alone fills the wheel cache).
        *[f"--bind-ro={source}:{target}" for source, target in binds.items()],
    ]
    log = open(spec.console_log, "ab")
    process = subprocess.Popen(
        ["sh", "-c", SUPERVISOR, SUPERVISOR_NAME, *command],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LAB_CGROUPS": " ".join(map(str, groups)),
             "LAB_HOST": spec.name,
             # /proc/sys/net writable, as on a VM: a host tunes its own network namespace (the balancer does)
             "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"},
    )
    log.close()
    return process.pid


def cpu_seconds(spec: MachineSpec) -> float:
    """CPU time used by every process of the host: cgroup v2's cpu.stat, present even without the cpu controller."""
    for directory in cgroup_dirs(spec.cgroup):
        stat = directory / "cpu.stat"
        if stat.exists():
            for line in stat.read_text().splitlines():
                if line.startswith("usage_usec "):
                    return int(line.split()[1]) / 1e6
    return 0.0


def _limit_memory(groups: list[Path], memory_mb: int) -> None:
    limit = str(memory_mb * 1024 * 1024)
    for directory in groups:
        for knob in ("memory.limit_in_bytes", "memory.max"):
            target = directory / knob
            if target.exists():
                try:
                    target.write_text(limit)
                except OSError:
                    pass  # a limit is a nicety; a machine that refuses it still runs the lab


def wait_for_ssh(spec: MachineSpec, pid: int, timeout: float = 90) -> None:
    """Wait until sshd on the host greets us; fail early if nspawn died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
            tail = _tail(spec.console_log)
            raise ProviderError(f"{spec.name} stopped while booting: {tail or 'no output'} (see {spec.console_log})")
        try:
            with socket.create_connection((spec.ip, 22), timeout=1) as sock:
                sock.settimeout(2)
                if sock.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise ProviderError(f"{spec.name} did not accept SSH within {timeout:.0f} s (see {spec.console_log})")


def _name_and_state(pid: int) -> tuple[str, str] | None:
    """A process's name and state letter from /proc/PID/stat (the name may hold spaces and parentheses); None if gone."""
    try:
        name, rest = Path(f"/proc/{pid}/stat").read_text().split(" (", 1)[1].rsplit(") ", 1)
        return name, rest.split()[0]
    except (OSError, IndexError, ValueError):
        return None


def _is_zombie(pid: int) -> bool:
    found = _name_and_state(pid)
    return found is None or found[1] == "Z"


def _tail(path: str) -> str:
    try:
        lines = [l for l in Path(path).read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def _pids_below(directory: Path) -> list[int]:
    # os.walk, not rglob: the host's own systemd (or the v1 release agent) removes groups while we walk, and a group
    # that vanished has no processes left to count.
    pids: list[int] = []
    for folder, _, files in os.walk(directory):
        if "cgroup.procs" in files:
            try:
                pids.extend(int(p) for p in (Path(folder) / "cgroup.procs").read_text().split())
            except OSError:
                continue
    return pids


def leftover_pids(spec: MachineSpec) -> set[int]:
    """Every process in the host's cgroups. With no supervisor or nspawn among them, they are what a kill of its
    nspawn from outside left behind: the host's systemd and services, still serving, unsupervised."""
    return {p for d in cgroup_dirs(spec.cgroup) for p in _pids_below(d)}


def _described(pid: int) -> str:
    """`1234 (postgres, state D)`: what a process that outlived SIGKILL was, for the error that names it."""
    found = _name_and_state(pid)
    return f"{pid} ({found[0]}, state {found[1]})" if found else f"{pid} (gone)"


# A killed process leaves its cgroup only once it runs again: one asleep in the disk's queue (state D) waits for its
# I/O first. A 13-host lab destroyed at once, its hosts' disks removed beside it, kept one for more than 10 s.
KILL_TIMEOUT_S = 60


def stop(spec: MachineSpec, timeout: float = KILL_TIMEOUT_S) -> None:
    """Kill every process of the host (the lab is being removed: no need for a polite shutdown)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = leftover_pids(spec)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            survivors = ", ".join(_described(pid) for pid in sorted(pids))
            raise ProviderError(f"{spec.name}: processes survived SIGKILL for {timeout:.0f} s: {survivors}")
        time.sleep(0.05)


def remove(spec: MachineSpec) -> None:
    """Unmount the disk, remove the cgroups and the host's folder; what is already gone is fine."""
    for attempt in range(50):
        if not is_mounted(spec.merged):
            break
        result = subprocess.run(["umount", str(spec.merged)], capture_output=True, text=True)
        if result.returncode != 0:
            time.sleep(0.1)
    else:
        raise ProviderError(f"{spec.name}: {spec.merged} is still mounted (busy)")
    for directory in cgroup_dirs(spec.cgroup):
        _remove_cgroup_tree(directory)
        parent = directory.parent
        try:
            parent.rmdir()  # the lab's own group, once its last host is gone
        except OSError:
            pass
    if Path(spec.root).exists():
        run(["rm", "-rf", "--one-file-system", spec.root])


def _remove_cgroup_tree(directory: Path) -> None:
    # Deepest first; a group something else removed meanwhile (the v1 release agent does, for empty groups) is fine.
    for folder, _, _ in os.walk(directory, topdown=False):
        try:
            Path(folder).rmdir()
        except FileNotFoundError:
            pass
