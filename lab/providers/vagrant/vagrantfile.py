"""Renders the repository's Vagrantfile.j2 from a resolved topology (the template only prints values)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import jinja2

from lab.topology import Topology

TEMPLATE = Path(__file__).resolve().parents[3] / "Vagrantfile.j2"
BOOT_TIMEOUT_S = 900  # software-emulated guests can take minutes on a busy machine


def libvirt_network_name(topology: Topology) -> str:
    return f"lab-{topology.name}"


def render(topology: Topology, libvirt_driver: str) -> str:
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
        box_virtualbox=topology.vagrant.box_virtualbox,
        box_libvirt=topology.vagrant.box_libvirt,
        boot_timeout=BOOT_TIMEOUT_S,
    )
