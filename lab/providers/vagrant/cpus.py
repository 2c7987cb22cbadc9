"""Pinning a vagrant-libvirt lab's VMs (their qemu emulator and vCPU threads) to some of the machine's CPUs."""

from __future__ import annotations

from typing import Any, Callable

from lab.errors import ProviderError
from lab.machine.cpus import format_cpulist, machine_cpus
from lab.system import run

SYSTEM_URI = "qemu:///system"  # as lab.providers.vagrant.libvirt: the VMs vagrant-libvirt makes for lab


def pin(resources: dict[str, Any], cpus: str | None, virsh: Callable[..., str] | None = None) -> None:
    """Every running VM of the lab on `cpus` (None: every CPU of the machine), live; VirtualBox VMs cannot be."""
    if resources.get("vagrant_provider") != "libvirt":
        raise ProviderError("only vagrant-libvirt VMs can be pinned to CPUs here: run the bench with --shared-cpus")
    virsh = virsh or _virsh
    target = cpus or format_cpulist(machine_cpus())
    prefix = resources["domain_prefix"]
    hosts = set(resources.get("hosts", []))
    for domain in virsh("list", "--name").split():
        if not (domain.startswith(prefix) and domain[len(prefix):] in hosts):
            continue  # another lab's VM, or one vagrant names otherwise
        virsh("emulatorpin", domain, target, "--live")
        for vcpu in range(int(virsh("vcpucount", domain, "--live", "--active").strip() or 0)):
            virsh("vcpupin", domain, str(vcpu), target, "--live")


def _virsh(*args: str) -> str:
    return run(["virsh", "-c", SYSTEM_URI, *args], timeout=60).stdout
