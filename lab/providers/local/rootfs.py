"""The Debian 12 root filesystem every local host boots from: built once with debootstrap, then cached."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from lab.errors import ProviderError
from lab.providers.base import Say
from lab.providers.local.paths import cache_root

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = (
    "openssh-server", "python3", "python3-venv", "sudo", "iproute2", "procps", "ca-certificates",
    "systemd", "systemd-sysv", "dbus", "libpam-systemd",
)
SOURCES = f"""deb {MIRROR} {SUITE} main
deb {MIRROR} {SUITE}-updates main
deb http://deb.debian.org/debian-security {SUITE}-security main
"""
# Units a container has no use for; masking them keeps boot short and the journal quiet.
MASKED_UNITS = (
    "getty@tty1.service", "console-getty.service", "serial-getty@.service", "getty.target",
    "systemd-timesyncd.service", "apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer",
    "fstrim.timer", "man-db.timer", "dpkg-db-backup.timer",
)
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")
RECIPE_VERSION = "3"  # bump when the build below changes, so old caches are not reused


def machine_ca_certificates() -> list[Path]:
    """The machine's own extra CAs: TLS may be intercepted here, as behind many corporate proxies."""
    if not LOCAL_CA_DIR.is_dir():
        return []
    return sorted(p for p in LOCAL_CA_DIR.rglob("*.crt") if p.is_file())


def rootfs_key() -> str:
    digest = hashlib.sha256(RECIPE_VERSION.encode())
    digest.update(" ".join(PACKAGES).encode())
    for cert in machine_ca_certificates():
        digest.update(cert.read_bytes())
    return f"{SUITE}-{digest.hexdigest()[:12]}"


def ensure_rootfs(say: Say) -> Path:
    """The cached rootfs, building it first if needed (under a lock: two labs may start at once)."""
    root = cache_root() / "rootfs"
    root.mkdir(parents=True, exist_ok=True)
    final = root / rootfs_key()
    if (final / ".lab-complete").exists():
        return final
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / ".lab-complete").exists():
            return final
        say(f"building the Debian {SUITE} rootfs once (about a minute; cached in {root})")
        building = root / (final.name + ".building")
        if building.exists():
            shutil.rmtree(building)  # an earlier build was interrupted
        _debootstrap(building)
        _customise(building)
        (building / ".lab-complete").write_text("ok\n")
        if final.exists():
            shutil.rmtree(final)
        os.rename(building, final)
        for stale in root.iterdir():
            if stale.is_dir() and stale != final and not stale.name.endswith(".building"):
                shutil.rmtree(stale, ignore_errors=True)
    return final


def _debootstrap(target: Path) -> None:
    result = subprocess.run(
        ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(target), MIRROR],
        capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:]
        raise ProviderError(f"debootstrap failed: {tail[0] if tail else result.returncode}")


def _chroot(target: Path, *args: str) -> None:
    result = subprocess.run(
        ["chroot", str(target), *args], capture_output=True, text=True, stdin=subprocess.DEVNULL,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LANG": "C.UTF-8"},
    )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:]
        raise ProviderError(f"rootfs: `{' '.join(args)}` failed: {tail[0] if tail else result.returncode}")


def _customise(target: Path) -> None:
    """Make the image a neutral host: no shared host keys, no machine DNS, trusted machine CAs, fresh lists."""
    for key in (target / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (target / "etc/apt/sources.list").write_text(SOURCES)
    for cert in machine_ca_certificates():
        shutil.copy(cert, target / "usr/local/share/ca-certificates" / cert.name)
    _chroot(target, "update-ca-certificates")
    for unit in MASKED_UNITS:
        link = target / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    # The build needs the machine's DNS for one apt-get update; hosts then get none.
    shutil.copy("/etc/resolv.conf", target / "etc/resolv.conf")
    try:
        _chroot(target, "apt-get", "update", "-qq")
        _chroot(target, "apt-get", "-y", "-qq", "upgrade")
        _chroot(target, "apt-get", "clean")
    finally:
        (target / "etc/resolv.conf").write_text("")
    (target / "etc/machine-id").write_text("")  # each host gets its own at first boot
