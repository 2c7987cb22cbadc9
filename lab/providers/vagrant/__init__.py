"""The Vagrant provider: real VMs (libvirt or VirtualBox) from the rendered Vagrantfile, for attendees' laptops."""

from __future__ import annotations

import ipaddress
import shutil
import sys
import time
from typing import Any

from lab.errors import NetworkClash, ProviderError, VagrantProviderMissing
from lab.hosts import HostFacts, SshEndpoint
from lab.machine import network
from lab.machine.cpus import cpu_seconds_over_ssh
from lab.progress import elapsed
from lab.providers.base import Provider
from lab.providers.vagrant import cpus as vm_cpus, settings, vagrantfile
from lab.providers.vagrant.driver import VagrantDriver
from lab.state import LabDir
from lab.system import Say
from lab.topology import Topology


def choose_vagrant_provider(topology: Topology) -> str:
    """The Vagrant provider lab.toml asks for, or on "auto" the one this machine can run."""
    wanted = settings.of(topology).provider
    if wanted != "auto":
        return wanted
    if sys.platform.startswith("linux"):
        return "libvirt"  # installable from the distribution, unlike VirtualBox
    return "virtualbox"


# Vagrant reaches a VM over its management NIC (a DHCP address Vagrant reads back): sshd must answer there, and the
# NIC's DHCP client keeps its lease. The firewall still admits SSH from the control address only.
MANAGEMENT_SOCKETS = (("tcp", 22), ("udp", 68))


class VagrantProvider(Provider):
    name = "vagrant"

    def build_box(self, say: Say, rebuild: bool = False) -> str:
        """`lab box build`: libvirt ready, then the Debian 12 box built here and added to Vagrant; its name."""
        from lab.providers.vagrant import box, libvirt  # the box builder's imports only when a box is built

        libvirt.ensure_libvirt(say)
        return box.ensure_box(say, rebuild=rebuild)

    def preflight(self, topology: Topology, labdir: LabDir, say: Say) -> None:
        provider = choose_vagrant_provider(topology)
        if provider == "libvirt":
            from lab.providers.vagrant import libvirt

            if ipaddress.IPv4Network(topology.subnet).overlaps(ipaddress.IPv4Network(vagrantfile.MANAGEMENT_NETWORK)):
                raise NetworkClash(
                    f"subnet {topology.subnet} overlaps vagrant-libvirt's management network {vagrantfile.MANAGEMENT_NETWORK}; "
                    "choose another with LAB_SUBNET or [lab] subnet in lab.toml"
                )
            libvirt.ensure_libvirt(say)
            network.check_subnet_free(topology.subnet, libvirt.network_bridge(vagrantfile.libvirt_network_name(topology)) or "")
        else:
            VagrantDriver.require_vagrant()
            if shutil.which("VBoxManage") is None:
                raise VagrantProviderMissing(
                    "the Vagrant provider virtualbox is not installed (no VBoxManage): install VirtualBox, "
                    "or choose another with [vagrant] provider in lab.toml"
                )
            network.check_subnet_free(topology.subnet, "")

    def facts(self, topology: Topology) -> HostFacts:
        # VMs reach the registries through Vagrant's NAT network; lab's SSH arrives through it too, from the machine.
        return HostFacts(proxy_url=None, wheelhouse=None,
                         control_address=vagrantfile.CONTROL_ADDRESS[choose_vagrant_provider(topology)],
                         management_sockets=MANAGEMENT_SOCKETS)

    def up(self, topology: Topology, labdir: LabDir, state: dict[str, Any], say: Say,
           offline: bool = False) -> list[SshEndpoint]:
        # offline never reaches here: this provider has no "packages" cache part, so lab.offline refuses it first.
        provider = choose_vagrant_provider(topology)
        previous = state.get("resources") or {}
        driver_name = self._driver_name(topology, provider, previous, say)
        resources = {
            "vagrant_provider": provider,
            "libvirt_driver": driver_name,
            "subnet": topology.subnet,
            "libvirt_network": vagrantfile.libvirt_network_name(topology),
            "domain_prefix": f"{topology.name}-",
            "hosts": sorted(set(previous.get("hosts", [])) | {h.name for h in topology.hosts}),
        }
        state["resources"] = resources
        labdir.write(state)
        driver = VagrantDriver(labdir.path, labdir.logs / "vagrant.log")
        dropped = [name for name in previous.get("hosts", []) if name not in {h.name for h in topology.hosts}]
        for name in dropped:  # while the old Vagrantfile still defines them
            say(f"removing {name} (no longer in the topology)")
            driver.destroy(name)
        if provider == "libvirt":
            from lab.providers.vagrant import box

            if settings.of(topology).box_libvirt == box.BOX_NAME:
                box.ensure_box(say)
        (labdir.path / "Vagrantfile").write_text(vagrantfile.render(topology, driver_name))
        state["resources"]["hosts"] = [h.name for h in topology.hosts]
        labdir.write(state)
        if provider == "libvirt" and "management_network_existed" not in previous:
            from lab.providers.vagrant import libvirt

            # Vagrant makes its management network when missing; `lab destroy` removes it only if lab made it.
            existed = libvirt.network_bridge(vagrantfile.MANAGEMENT_NETWORK_NAME) is not None
            state["resources"]["management_network_existed"] = existed
            labdir.write(state)
        elif "management_network_existed" in previous:
            state["resources"]["management_network_existed"] = previous["management_network_existed"]
        say(f"vagrant up --provider={provider} ({len(topology.hosts)} VMs, in parallel; log: {driver.log})")
        # libvirt refuses to start a network whose subnet any route already covers, the lab's own blackhole
        # included ("Network is already in use by interface *"): it goes in once the network's bridge is up.
        network.remove_blackhole(topology.subnet)
        # Vagrant's milestones come through `progress`, so "still" lines fill only the silences (an emulated boot).
        with elapsed(say, f"running vagrant up ({len(topology.hosts)} VMs)", "vagrant up finished") as progress:
            driver.up(provider, progress=progress)
        network.ensure_blackhole(topology.subnet)
        states = driver.status()
        down = [h.name for h in topology.hosts if states.get(h.name) != "running"]
        if down:
            raise ProviderError(f"VMs not running after vagrant up: {', '.join(f'{n} ({states.get(n)})' for n in down)}")
        configs = driver.ssh_configs([h.name for h in topology.hosts])
        return [SshEndpoint(host=name, address=c["hostname"], port=int(c["port"]), user=c["user"],
                            identity_file=c["identityfile"], host_key=None) for name, c in configs.items()]

    def _driver_name(self, topology: Topology, provider: str, previous: dict[str, Any], say: Say) -> str:
        if provider != "libvirt":
            return "n/a"
        if settings.of(topology).libvirt_driver != "auto":
            return settings.of(topology).libvirt_driver
        if previous.get("libvirt_driver") in ("kvm", "qemu"):
            return previous["libvirt_driver"]
        from lab.providers.vagrant import box

        return box.choose_driver(say)

    def status(self, labdir: LabDir, state: dict[str, Any]) -> dict[str, str]:
        """Each VM's state in Vagrant's words ("running", "shutoff", "not created"), as `vagrant status` reports it."""
        if not (labdir.path / "Vagrantfile").exists():
            return {h["name"]: "not created" for h in state["topology"]["hosts"]}
        driver = VagrantDriver(labdir.path, labdir.logs / "vagrant.log")
        if (state.get("resources") or {}).get("vagrant_provider") == "libvirt":
            from lab.providers.vagrant import libvirt

            libvirt.require_libvirt()  # one clear line, rather than Vagrant's page about a socket
        return {name: value.replace("_", " ") for name, value in driver.status().items()}

    def pin_cpus(self, project: Any, cpus: str | None) -> None:
        vm_cpus.pin(project.labdir.read().get("resources") or {}, cpus)

    def host_cpu_seconds(self, project: Any) -> dict[str, float]:
        """No cgroup view of a VM from outside that counts what its guest runs: ask each guest's /proc/stat."""
        state = project.labdir.read()
        return cpu_seconds_over_ssh(project.labdir, [h["name"] for h in state["topology"]["hosts"]])

    # `lab reset --to-step K` (lab/workshop.py): Vagrant's own snapshots of every VM, named after the step.
    def snapshot(self, project: Any, name: str) -> dict[str, float]:
        return self._snapshot(project.labdir, "save", name)

    def restore(self, project: Any, name: str, say: Say = lambda message: None) -> dict[str, float]:
        say(f"vagrant snapshot restore {name} (every VM)")
        return self._snapshot(project.labdir, "restore", name)

    def power_off(self, project: Any, host: str) -> None:
        VagrantDriver(project.labdir.path, project.labdir.logs / "vagrant.log").halt(host, force=True)

    @staticmethod
    def _snapshot(labdir: LabDir, action: str, name: str) -> dict[str, float]:
        started = time.monotonic()
        VagrantDriver(labdir.path, labdir.logs / "vagrant.log").snapshot(action, name)
        seconds = time.monotonic() - started  # Vagrant does the VMs one after another: the share of each
        hosts = [h["name"] for h in labdir.read()["topology"]["hosts"]]
        return {host: seconds / len(hosts) for host in hosts}

    def destroy(self, labdir: LabDir, state: dict[str, Any], say: Say) -> None:
        resources = state.get("resources") or {}
        if resources.get("vagrant_provider") == "libvirt":
            from lab.providers.vagrant import libvirt

            libvirt.start_libvirt(say)  # after a reboot nothing may have started it, and its VMs are still defined
        if (labdir.path / "Vagrantfile").exists():
            VagrantDriver(labdir.path, labdir.logs / "vagrant.log").destroy()
        if resources.get("vagrant_provider") == "libvirt":
            from lab.providers.vagrant import libvirt

            libvirt.remove_leftovers(resources["domain_prefix"], resources["libvirt_network"], say)
            if resources.get("management_network_existed") is False:
                libvirt.remove_unused_network(vagrantfile.MANAGEMENT_NETWORK_NAME, say)
        if resources.get("subnet"):
            network.remove_blackhole(resources["subnet"])
        shutil.rmtree(labdir.path / ".vagrant", ignore_errors=True)
        say("removed VMs, their disks and the lab network")

