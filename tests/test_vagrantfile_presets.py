"""The Vagrantfile of every preset (issue 9): one VM per host of the preset, each tier's memory, and `vagrant validate`
accepting it for both Vagrant providers (the machinery is tests/test_vagrantfile.py's)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lab import stack as stacks
from lab.providers.vagrant import vagrantfile
from lab.topology import Overrides, resolve

from tests import test_vagrantfile

vagrant_cli = test_vagrantfile.vagrant_cli  # the fixture that installs vagrant when it can, shared

PRESETS = tuple(stacks.current().presets)
# Memory per host, per tier, as each preset's VMs get it (lab.toml [tiers.X] memory changes it).
TIER_MEMORY_MB = {"lb": 512, "web": 768, "db": 768, "cache": 256, "loadgen": 512, "api": 768,
                  "monitor": 512, "search": 256, "q": 384}


def rendered(preset: str) -> tuple[str, list]:
    topology = resolve({}, {}, Overrides(preset=preset), platform="linux")
    return vagrantfile.render(topology, "qemu"), list(topology.hosts)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_host_of_the_preset_is_a_vm_with_its_tiers_memory(preset: str) -> None:
    text, hosts = rendered(preset)
    assert text.count("config.vm.define") == len(hosts)
    for host in hosts:
        assert f'config.vm.define "{host.name}"' in text
        assert host.memory_mb == TIER_MEMORY_MB[host.tier]
    assert {stacks.current().tiers[t].memory_mb for t in TIER_MEMORY_MB} == set(TIER_MEMORY_MB.values())


def test_the_tuned_preset_is_the_workshop_plus_step_6() -> None:
    assert [h.name for h in rendered("workshop")[1]] == ["lb1", "web1", "web2", "db1"]
    assert [h.name for h in rendered("tuned")[1]] == ["lb1", "web1", "web2", "db1", "db2", "cache1", "cache2"]


@pytest.mark.parametrize("provider", ["libvirt", "virtualbox"])
@pytest.mark.parametrize("preset", PRESETS)
def test_vagrant_validate_accepts_every_preset(vagrant_cli: str, tmp_path: Path, provider: str, preset: str) -> None:
    (tmp_path / "Vagrantfile").write_text(rendered(preset)[0])
    env = dict(os.environ, VAGRANT_DEFAULT_PROVIDER=provider, VAGRANT_CHECKPOINT_DISABLE="1",
               HOME=os.environ.get("HOME", "/root"))
    if provider == "virtualbox" and shutil.which("VBoxManage") is None:
        shim = tmp_path / "bin"  # as tests/test_vagrantfile.py: answer Vagrant's one usability probe
        shim.mkdir()
        (shim / "VBoxManage").write_text("#!/bin/sh\necho 7.0.14r161095\n")
        (shim / "VBoxManage").chmod(0o755)
        env["PATH"] = f"{shim}:{env['PATH']}"
    result = subprocess.run([vagrant_cli, "validate"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validated successfully" in result.stdout
