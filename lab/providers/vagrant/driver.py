"""The one place lab touches python-vagrant: up, status, ssh-config and destroy, with its traps handled."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

from lab.errors import MissingDependency, ProviderError
from lab.system import gist

# Vagrant's own words for the failures users hit, mapped to the fix.
KNOWN_FAILURES = (
    (r"box .* could not be found|could not find the box|box '.*' not installed", "the VM box is missing: run `lab box build` (libvirt) or `vagrant box add` it"),
    (r"virConnectOpen|libvirt.*(socket|connection).*(refused|no such file)|Failed to connect socket", "libvirtd is not running: start it (`libvirtd -d`) or rerun `lab up`, which starts it"),
    (r"Timed out while waiting for the machine to boot", "a VM did not boot within its boot timeout; see .lab/logs/vagrant.log"),
    (r"provider '(\w+)'.*(isn't usable|could not be found|not installed)|Vagrant could not detect VirtualBox|plugin.*not installed", "the Vagrant provider is not installed: install it, or choose another with [vagrant] provider in lab.toml"),
)


class VagrantDriver:
    """`vagrant` for one lab folder; every command's output goes to .lab/logs/vagrant.log."""

    def __init__(self, root: Path, log: Path) -> None:
        if shutil.which("vagrant") is None:
            # python-vagrant only says so at its first call, as a RuntimeError: say it first, with the fix.
            raise MissingDependency("vagrant is not installed (Debian: apt-get install vagrant vagrant-libvirt)")
        logging.getLogger("vagrant").setLevel(logging.ERROR)  # it logs, then swallows, some failures
        import vagrant  # imported late: at import it warns when vagrant is not on PATH

        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, VAGRANT_CWD=str(root), VAGRANT_NO_COLOR="1", VAGRANT_CHECKPOINT_DISABLE="1")
        self._vagrant = vagrant.Vagrant(root=str(root), env=env,
                                        out_cm=vagrant.make_file_cm(str(log)), err_cm=vagrant.make_file_cm(str(log)))

    def _fail(self, what: str) -> ProviderError:
        tail = self.log.read_text(errors="replace")[-20000:] if self.log.exists() else ""
        for pattern, fix in KNOWN_FAILURES:
            if re.search(pattern, tail, re.IGNORECASE):
                return ProviderError(f"{what}: {fix}")
        return ProviderError(f"{what}: {gist(tail)} (see {self.log})")

    def up(self, provider: str) -> None:
        try:
            self._vagrant.up(no_provision=True, provider=provider)
        except subprocess.CalledProcessError:
            raise self._fail("vagrant up failed") from None

    def status(self) -> dict[str, str]:
        try:
            found = self._vagrant.status()
        except subprocess.CalledProcessError:
            raise self._fail("vagrant status failed") from None
        if not found:  # python-vagrant logs a failed status and returns nothing
            raise self._fail("vagrant status reported no machines")
        return {s.name: s.state for s in found}

    def ssh_config(self, vm_name: str) -> dict[str, str]:
        """The VM's ssh settings; multi-VM setups need the name (python-vagrant would pick none)."""
        try:
            text = self._vagrant.ssh_config(vm_name=vm_name)
        except subprocess.CalledProcessError:
            raise self._fail(f"vagrant ssh-config {vm_name} failed") from None
        settings = {}
        for line in (text or "").splitlines():
            parts = line.strip().split(None, 1)
            if len(parts) == 2:
                settings[parts[0].lower()] = parts[1].strip('"')
        if not {"hostname", "user", "port", "identityfile"} <= set(settings):
            raise ProviderError(f"vagrant ssh-config {vm_name} gave no usable settings (see {self.log})")
        return settings

    def destroy(self, vm_name: str | None = None) -> None:
        try:
            self._vagrant.destroy(vm_name=vm_name)
        except subprocess.CalledProcessError:
            raise self._fail(f"vagrant destroy {vm_name or ''} failed".replace("  ", " ")) from None
