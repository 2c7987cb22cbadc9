"""A Debian 12 root filesystem made here with debootstrap: the one builder behind the local rootfs and the Vagrant box."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Callable, Sequence

from lab.errors import ProviderError
from lab.system import gist

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
SOURCES = f"""deb {MIRROR} {SUITE} main
deb {MIRROR} {SUITE}-updates main
deb http://deb.debian.org/debian-security {SUITE}-security main
"""
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")
MACHINE_RESOLV_CONF = Path("/etc/resolv.conf")
CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LANG": "C.UTF-8"}


def machine_ca_certificates() -> list[Path]:
    """The machine's own extra CAs: TLS may be intercepted here, as behind many corporate proxies."""
    if not LOCAL_CA_DIR.is_dir():
        return []
    return sorted(p for p in LOCAL_CA_DIR.rglob("*.crt") if p.is_file())


def build(target: Path, packages: Sequence[str], masked_units: Sequence[str], what: str,
          own_steps: Callable[[Path], None] = lambda root: None, keep_apt_caches: bool = False) -> None:
    """debootstrap SUITE (minbase plus packages) into target, and make it a neutral host of any provider.

    Neutral: Debian's own mirrors in sources.list, no host keys shipped (each host makes its own), the machine's
    extra CAs trusted, masked_units masked, packages upgraded, no DNS of this machine, a fresh machine-id at
    first boot. own_steps(target) are the caller's additions (a kernel's config, users, sshd settings), made
    before the upgrade so that dpkg settings among them apply to it. keep_apt_caches keeps apt's binary
    caches (only the downloaded .debs go), which every host's first apt-get would otherwise rebuild.
    `what` names the image in errors ("rootfs", "box").
    """
    debootstrap(target, packages, what)
    (target / "etc/apt/sources.list").write_text(SOURCES)
    remove_ssh_host_keys(target)
    for cert in machine_ca_certificates():
        shutil.copy(cert, target / "usr/local/share/ca-certificates" / cert.name)
    chroot(target, what, "update-ca-certificates")
    for unit in masked_units:
        link = target / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    own_steps(target)
    # The build needs the machine's DNS for apt; hosts then get theirs from their provider (or none).
    resolv = target / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)
    shutil.copyfile(MACHINE_RESOLV_CONF, resolv)
    try:
        chroot(target, what, "apt-get", "update", "-qq")
        chroot(target, what, "apt-get", "-y", "-qq", "upgrade")
        if keep_apt_caches:
            # Not `apt-get clean`: it drops apt's binary caches too.
            chroot(target, what, "apt-cache", "gencaches")
            for deb in (target / "var/cache/apt/archives").glob("*.deb"):
                deb.unlink()
        else:
            chroot(target, what, "apt-get", "clean")
    finally:
        resolv.write_text("")
        resolv.chmod(0o644)
    (target / "etc/machine-id").write_text("")  # each host makes its own at first boot


def debootstrap(target: Path, packages: Sequence[str], what: str) -> None:
    result = subprocess.run(
        ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", SUITE, str(target), MIRROR],
        capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        # debootstrap's own output ends with "see the log"; the reason is in that log.
        log = target / "debootstrap/debootstrap.log"
        detail = log.read_text(errors="replace") if log.is_file() else result.stderr or result.stdout
        raise ProviderError(f"{what}: debootstrap {SUITE} failed (exit {result.returncode}): {gist(detail)}")


def chroot(target: Path, what: str, *args: str) -> None:
    """Run a command inside the image being built; a failure is a one-line ProviderError naming it."""
    result = subprocess.run(["chroot", str(target), *args], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                            env=CHROOT_ENV)
    if result.returncode != 0:
        raise ProviderError(f"{what}: `{' '.join(args)}` failed in the chroot: {gist(result.stderr or result.stdout)}")


def remove_ssh_host_keys(root: Path) -> None:
    """No image ships host keys: hosts made from one image would all share them."""
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
