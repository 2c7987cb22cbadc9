"""Renders the repository's Vagrantfile.j2 from a resolved topology (the template only prints values)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import jinja2

from lab.providers.vagrant import settings
from lab.topology import Topology, checked_for_templates

TEMPLATE = Path(__file__).resolve().parents[3] / "Vagrantfile.j2"
# vagrant-libvirt's management network (its defaults, named in the Vagrantfile so lab can rely on them): Vagrant's
# and lab's SSH reach each VM there, and the VMs reach the package registries through its NAT.
MANAGEMENT_NETWORK_NAME = "vagrant-libvirt"
MANAGEMENT_NETWORK = "192.168.121.0/24"
# Where SSH comes from as a VM sees it: the machine's address on the management network (libvirt), or
# VirtualBox's NAT gateway, through which its forwarded SSH port arrives.
CONTROL_ADDRESS = {"libvirt": str(next(ipaddress.IPv4Network(MANAGEMENT_NETWORK).hosts())), "virtualbox": "10.0.2.2"}


def libvirt_network_name(topology: Topology) -> str:
    return f"lab-{topology.name}"


def render(topology: Topology, libvirt_driver: str) -> str:
    """The Vagrantfile (Ruby: every string printed into it was checked against a strict pattern first)."""
    checked_for_templates(topology)
    if libvirt_driver not in ("kvm", "qemu", "n/a"):
        raise ValueError(f"libvirt driver {libvirt_driver!r}")
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE.parent)), undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, autoescape=False,
    )
    return environment.get_template(TEMPLATE.name).render(
        name=topology.name,
        hosts=topology.hosts,
        netmask=str(ipaddress.IPv4Network(topology.subnet).netmask),
        libvirt_network=libvirt_network_name(topology),
        libvirt_driver=libvirt_driver,
        box_virtualbox=settings.of(topology).box_virtualbox,
        box_libvirt=settings.of(topology).box_libvirt,
        boot_timeout=settings.of(topology).boot_timeout,
        management_network_name=MANAGEMENT_NETWORK_NAME,
        management_network=MANAGEMENT_NETWORK,
    )
