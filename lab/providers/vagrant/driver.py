"""The one place lab touches python-vagrant: up, status, ssh-config and destroy, with its traps handled."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable

from lab.errors import (BootTimeout, BoxMissing, LabError, LibvirtDown, MissingDependency, ProviderError, VagrantMissing,
                        VagrantProviderMissing)
from lab.machine_packages import package_providing
from lab.system import gist

VAGRANT_INSTALL_FIX = "install it: apt-get install vagrant vagrant-libvirt (Debian/Ubuntu), or see https://developer.hashicorp.com/vagrant/install"
# The lines of `vagrant up` worth showing while it runs (the rest is in .lab/logs/vagrant.log).
MILESTONES = re.compile(r"^==> [\w.-]+: (Creating image|Starting domain|Waiting for SSH|Machine booted and ready"
                        r"|Machine already provisioned|Domain is already running|Machine '[\w.-]+' has a post)")


def _machine(text: str) -> str:
    """The VM Vagrant names in its error ("... on the 'web1'\nmachine"), else the last one it spoke of, or "a VM"."""
    named = re.findall(r"on the '([\w.-]+)'\s+machine", text)
    spoke = re.findall(r"^==> ([\w.-]+):", text, re.MULTILINE)
    names = named or spoke
    return f"VM {names[-1]}" if names else "a VM"


def _box_missing(text: str, log: Path) -> LabError:
    found = re.findall(r"box '([^']+)' (?:could not|does not|isn't)", text, re.IGNORECASE)
    box = found[-1] if found else "the lab's box"
    return BoxMissing(
        f"the Vagrant box {box} is missing: run `lab box build` (for lab/debian12), `vagrant box add {box}`, "
        "or name another with [vagrant] box_libvirt / box_virtualbox in lab.toml"
    )


def _libvirt_down(text: str, log: Path) -> LabError:
    return LibvirtDown(
        "libvirtd is not running: start it (`virtlogd -d && libvirtd -d`, or `systemctl start libvirtd`), "
        "or rerun `lab up`, which starts it"
    )


def _boot_timeout(text: str, log: Path) -> LabError:
    # In parallel, Vagrant reports each VM's error in a block of its own: name every VM that timed out.
    blocks = re.split(r"An error occurred while executing the action on the '", text)[1:]
    late = [b.split("'", 1)[0] for b in blocks if "Timed out while waiting for the machine to boot" in b]
    who = f"VMs {', '.join(late)} did not boot within their" if len(late) > 1 else f"{_machine(text)} did not boot within its"
    return BootTimeout(
        f"{who} boot timeout (see {log}); on a busy machine, or one that emulates its VMs, "
        "raise [vagrant] boot_timeout in lab.toml and rerun `lab up`"
    )


def _provider_missing(text: str, log: Path) -> LabError:
    found = re.findall(r"provider '(\w+)'", text)
    provider = found[-1] if found else ("virtualbox" if "VirtualBox" in text else "libvirt")
    fix = "apt-get install vagrant-libvirt" if provider == "libvirt" else "install VirtualBox"
    return VagrantProviderMissing(
        f"the Vagrant provider {provider} is not installed: {fix}, or choose another with [vagrant] provider in lab.toml"
    )


def _program_missing(text: str, log: Path) -> LabError:
    # libvirt's words when a program it runs is not installed, e.g. for its NAT network
    # ("Call to virNetworkCreate failed: Unable to find 'dnsmasq' binary in $PATH").
    program = re.findall(r"Unable to find '([^']+)' binary", text)[-1]
    package = package_providing(program)
    fix = (f"install the Debian package {package} (apt-get install --no-install-recommends {package})" if package
           else f"install the package that provides {program}")
    return MissingDependency(f"libvirt cannot find the program {program}: {fix}, then run `lab up` again (see {log})")


# Vagrant's own words for the failures users hit, each mapped to its error (and exit code) and the fix.
KNOWN_FAILURES: tuple[tuple[str, Callable[[str, Path], LabError]], ...] = (
    (r"Unable to find '[^']+' binary", _program_missing),
    (r"box '[^']+' (could not be found|does not exist|isn't installed for the provider)|could not find the box", _box_missing),
    (r"virConnectOpen|Failed to connect socket|Error while connecting to Libvirt", _libvirt_down),
    (r"Timed out while waiting for the machine to boot|wait_for timeout .* was exceeded", _boot_timeout),
    (r"provider '\w+' could not be found|provider '\w+' that was requested to back the machine\s+'[\w.-]+' is reporting"
     r"|Vagrant could not detect VirtualBox", _provider_missing),
)


def vagrants_reason(text: str) -> str:
    """The first error Vagrant reports ("... on the 'web1' machine. Please handle this error ...:" then the reason)."""
    match = re.search(r"on the '([\w.-]+)'\s+machine\. Please handle this error then try again:\s*\n\s*(\S[^\n]*)", text)
    if match:
        return f"{match.group(1)}: {match.group(2).strip()}"
    return gist(text)


def known_failure(text: str, log: Path) -> LabError | None:
    """The lab error for a failure Vagrant described in text, or None when it is none of the known ones."""
    for pattern, make in KNOWN_FAILURES:
        if re.search(pattern, text, re.IGNORECASE):
            return make(text, log)
    return None


class VagrantDriver:
    """`vagrant` for one lab folder; every command's output goes to .lab/logs/vagrant.log."""

    @staticmethod
    def require_vagrant() -> None:
        if shutil.which("vagrant") is None:
            # python-vagrant only says so at its first call, as a RuntimeError: say it first, with the fix.
            raise VagrantMissing(f"vagrant is not installed: {VAGRANT_INSTALL_FIX}")

    def __init__(self, root: Path, log: Path) -> None:
        self.require_vagrant()
        logging.getLogger("vagrant").setLevel(logging.ERROR)  # it logs, then swallows, some failures
        import vagrant  # imported late: at import it warns when vagrant is not on PATH

        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, VAGRANT_CWD=str(root), VAGRANT_NO_COLOR="1", VAGRANT_CHECKPOINT_DISABLE="1")
        self._vagrant = vagrant.Vagrant(root=str(root), env=env,
                                        out_cm=vagrant.make_file_cm(str(log)), err_cm=vagrant.make_file_cm(str(log)))

    def _mark(self) -> int:
        """Where the log ends now: a failure is judged by what its own command wrote, not by older runs."""
        return self.log.stat().st_size if self.log.exists() else 0

    def _fail(self, what: str, since: int) -> LabError:
        tail = ""
        if self.log.exists():
            with open(self.log, "rb") as handle:
                handle.seek(since)
                tail = handle.read().decode(errors="replace")[-20000:]
        known = known_failure(tail, self.log)
        if known is not None:
            return known
        return ProviderError(f"{what}: {vagrants_reason(tail)} (see {self.log})")

    def up(self, provider: str, progress: Callable[[str], None] = lambda line: None) -> None:
        """`vagrant up --no-provision` of every VM (in parallel where the provider can); milestones go to progress."""
        since = self._mark()
        try:
            lines = self._vagrant.up(no_provision=True, provider=provider, stream_output=True)
            with open(self.log, "a") as log:
                for line in lines:
                    log.write(f"{time.strftime('%H:%M:%S')} {line}")  # when each step came: emulated VMs are slow
                    log.flush()
                    if MILESTONES.search(line):
                        progress(line.strip().removeprefix("==> "))
        except subprocess.CalledProcessError:
            raise self._fail("vagrant up failed", since) from None

    def status(self) -> dict[str, str]:
        since = self._mark()
        try:
            found = self._vagrant.status()
        except subprocess.CalledProcessError:
            raise self._fail("vagrant status failed", since) from None
        if not found:  # python-vagrant logs a failed status and returns nothing
            raise self._fail("vagrant status reported no machines", since)
        return {s.name: vagrants_own_state(s.state, s.provider) for s in found}

    def ssh_configs(self, vm_names: list[str]) -> dict[str, dict[str, str]]:
        """Each VM's ssh settings, from one `vagrant ssh-config` (Vagrant starts once, not once per VM).

        python-vagrant's helpers (user(), hostname(), conf()) would need each VM's name in a multi-VM setup;
        here every block is read by its Host line, and a VM Vagrant gave nothing usable for is an error.
        """
        since = self._mark()
        try:
            text = self._vagrant.ssh_config()
        except subprocess.CalledProcessError:
            raise self._fail("vagrant ssh-config failed", since) from None
        blocks = parse_ssh_configs(text)
        for name in vm_names:
            if not {"hostname", "user", "port", "identityfile"} <= set(blocks.get(name, {})):
                raise ProviderError(f"vagrant ssh-config gave no usable settings for {name} (see {self.log})")
        return {name: blocks[name] for name in vm_names}

    def destroy(self, vm_name: str | None = None) -> None:
        since = self._mark()
        try:
            self._vagrant.destroy(vm_name=vm_name)
        except subprocess.CalledProcessError:
            raise self._fail(f"vagrant destroy {vm_name or ''} failed".replace("  ", " "), since) from None

    def halt(self, vm_name: str, force: bool = False) -> None:
        """`vagrant halt [--force] VM`: forced, the VM is powered off at once (libvirt's destroy), no clean shutdown."""
        since = self._mark()
        try:
            self._vagrant.halt(vm_name=vm_name, force=force)
        except subprocess.CalledProcessError:
            raise self._fail(f"vagrant halt {vm_name} failed", since) from None

    def snapshot(self, action: str, name: str) -> None:
        """`lab reset` (lab/workshop.py): `vagrant snapshot save --force NAME` or `restore --no-provision NAME`, every VM."""
        arguments = {"save": ["save", "--force", name], "restore": ["restore", "--no-provision", name]}[action]
        since = self._mark()
        try:
            self._vagrant._call_vagrant_command(["snapshot", *arguments])  # python-vagrant's own has no --force
        except subprocess.CalledProcessError:
            raise self._fail(f"vagrant snapshot {action} {name} failed", since) from None


# python-vagrant renames libvirt's states to VirtualBox's; `vagrant status` itself says libvirt's own words.
LIBVIRT_STATES = {"poweroff": "shutoff", "saved": "paused"}


def vagrants_own_state(state: str | None, provider: str | None) -> str:
    """A machine's state as `vagrant status` prints it (its state id, as in "running", "shutoff", "not_created")."""
    if state is None:
        return "unknown"
    return LIBVIRT_STATES.get(state, state) if provider == "libvirt" else state


def parse_ssh_configs(text: str | None) -> dict[str, dict[str, str]]:
    """`vagrant ssh-config` as {VM: {lower-cased key: its first value}}, one block per Host line."""
    blocks: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in (text or "").splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) != 2:
            continue
        key, value = parts[0].lower(), parts[1].strip('"')
        if key == "host":
            current = blocks.setdefault(value, {})
        elif current is not None:
            current.setdefault(key, value)
    return blocks
