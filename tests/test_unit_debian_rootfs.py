"""Unit tests for lab.machine.debian_rootfs: what the one debootstrap builder makes of an image (no root, no network).

debootstrap and chroot are replaced: debootstrap lays out a tiny Debian-like tree, chroot records what would run
inside, and what the image holds at that moment.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from lab.errors import ProviderError
from lab.machine import debian_rootfs


@pytest.fixture
def image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """(target folder, the commands chroot ran with the resolv.conf each saw), the machine's CAs being one cert."""
    target = tmp_path / "rootfs"
    cert = tmp_path / "corp.crt"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    resolv = tmp_path / "machine-resolv.conf"
    resolv.write_text("nameserver 192.0.2.53\n")
    ran: list[tuple[tuple[str, ...], str]] = []

    def fake_debootstrap(folder: Path, packages, what: str) -> None:
        for sub in ("etc/ssh", "etc/apt", "etc/systemd/system", "usr/local/share/ca-certificates", "var/cache/apt/archives"):
            (folder / sub).mkdir(parents=True)
        (folder / "etc/ssh/ssh_host_ed25519_key").write_text("shared key")
        (folder / "etc/resolv.conf").write_text("from debootstrap\n")
        (folder / "var/cache/apt/archives/python3.deb").write_text("deb")

    def fake_chroot(folder: Path, what: str, *args: str) -> None:
        ran.append((args, (folder / "etc/resolv.conf").read_text()))

    monkeypatch.setattr(debian_rootfs, "debootstrap", fake_debootstrap)
    monkeypatch.setattr(debian_rootfs, "chroot", fake_chroot)
    monkeypatch.setattr(debian_rootfs, "machine_ca_certificates", lambda: [cert])
    monkeypatch.setattr(debian_rootfs, "MACHINE_RESOLV_CONF", resolv)
    return target, ran


def test_the_image_is_a_neutral_host(image):
    target, ran = image
    debian_rootfs.build(target, ["openssh-server"], ["getty.target"], "rootfs")
    assert (target / "etc/apt/sources.list").read_text() == debian_rootfs.SOURCES
    assert not list((target / "etc/ssh").glob("ssh_host_*"))  # each host makes its own
    assert (target / "usr/local/share/ca-certificates/corp.crt").is_file()
    assert (target / "etc/systemd/system/getty.target").readlink() == Path("/dev/null")
    assert (target / "etc/resolv.conf").read_text() == ""  # the machine's DNS stays out of every host
    assert (target / "etc/machine-id").read_text() == ""
    commands = [args for args, _ in ran]
    assert commands == [("update-ca-certificates",), ("apt-get", "update", "-qq"), ("apt-get", "-y", "-qq", "upgrade"),
                        ("apt-get", "clean")]
    assert all(seen == "nameserver 192.0.2.53\n" for args, seen in ran if args[0] == "apt-get")


def test_own_steps_come_before_the_upgrade_and_apt_caches_may_stay(image):
    target, ran = image
    debian_rootfs.build(target, ["openssh-server"], (), "box", keep_apt_caches=True,
                        own_steps=lambda root: ran.append((("own step",), "")))
    commands = [args for args, _ in ran]
    assert commands.index(("own step",)) < commands.index(("apt-get", "-y", "-qq", "upgrade"))
    assert ("apt-get", "clean") not in commands and ("apt-cache", "gencaches") in commands
    assert not list((target / "var/cache/apt/archives").glob("*.deb"))


def test_a_failing_command_in_the_chroot_is_one_line_naming_the_image(tmp_path):
    with pytest.raises(ProviderError) as caught:
        debian_rootfs.chroot(tmp_path / "missing", "box", "true")
    assert str(caught.value).startswith("box: `true` failed in the chroot: ") and "\n" not in str(caught.value)
