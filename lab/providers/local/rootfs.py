"""The Debian 12 root filesystem every local host boots from: built once with debootstrap, then cached."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from pathlib import Path

from lab.machine import debian_rootfs
from lab.machine.debian_rootfs import SUITE, machine_ca_certificates
from lab.machine.paths import cache_root
from lab.progress import elapsed
from lab.system import Say

PACKAGES = (
    "openssh-server", "python3", "python3-venv", "sudo", "iproute2", "procps", "ca-certificates",
    "systemd", "systemd-sysv", "dbus", "libpam-systemd",
)
# Units a container has no use for; masking them keeps boot short and the journal quiet.
MASKED_UNITS = (
    "getty@tty1.service", "console-getty.service", "serial-getty@.service", "getty.target",
    "systemd-timesyncd.service", "apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer",
    "fstrim.timer", "man-db.timer", "dpkg-db-backup.timer",
)
COMPLETE_MARKER = ".lab-complete"  # written last: a rootfs without it is half-built
RECIPE_VERSION = "3"  # bump when the build below changes, so old caches are not reused


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
    if (final / COMPLETE_MARKER).exists():
        return final
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / COMPLETE_MARKER).exists():
            return final
        say(f"building the Debian {SUITE} rootfs once (about a minute; cached in {root})")
        building = root / (final.name + ".building")
        if building.exists():
            shutil.rmtree(building)  # an earlier build was interrupted
        # No steps of its own: systemd-nspawn boots a plain Debian with systemd; its consoles are masked above.
        with elapsed(say, f"building the Debian {SUITE} rootfs", f"built the Debian {SUITE} rootfs"):
            debian_rootfs.build(building, PACKAGES, MASKED_UNITS, "rootfs")
            (building / COMPLETE_MARKER).write_text("ok\n")
            if final.exists():
                shutil.rmtree(final)
            os.rename(building, final)
            for stale in root.iterdir():
                if stale.is_dir() and stale != final and not stale.name.endswith(".building"):
                    shutil.rmtree(stale, ignore_errors=True)
    return final
