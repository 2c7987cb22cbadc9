"""The vagrant provider's own lab.toml table, [vagrant]: its keys, defaults and checks (lab.topology resolves it
through lab.topology.PROVIDER_SETTINGS)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from lab.topology import BOX_NAME_PATTERN, Topology, _choice, _integer, _unknown_keys, template_safe

TABLE = "vagrant"
KEYS = {"provider", "box_virtualbox", "box_libvirt", "libvirt_driver", "boot_timeout"}
BOOT_TIMEOUT_S = (30, 7200)  # seconds Vagrant waits for a VM to answer SSH
VAGRANT_PROVIDERS = ("auto", "libvirt", "virtualbox")
LIBVIRT_DRIVERS = ("auto", "kvm", "qemu")


@dataclass(frozen=True)
class VagrantSettings:
    """How the vagrant provider makes VMs; "auto" values are decided by the provider from the machine."""

    provider: str = "auto"
    box_virtualbox: str = "debian/bookworm64"  # the public Debian 12 box
    box_libvirt: str = "lab/debian12"  # built locally by `lab box build`: nothing from Vagrant Cloud
    libvirt_driver: str = "auto"
    boot_timeout: int = 900  # software-emulated guests can take minutes on a busy machine


def resolve(table: Mapping[str, Any], environ: Mapping[str, str]) -> VagrantSettings:
    """[vagrant] from lab.toml, then LAB_VAGRANT_PROVIDER; one line naming the key when a value is wrong."""
    _unknown_keys("lab.toml [vagrant]", table, KEYS)
    defaults = VagrantSettings()
    provider = _choice("vagrant.provider", table.get("provider", defaults.provider), VAGRANT_PROVIDERS)
    if "LAB_VAGRANT_PROVIDER" in environ:
        provider = _choice("LAB_VAGRANT_PROVIDER", environ["LAB_VAGRANT_PROVIDER"], VAGRANT_PROVIDERS)
    boxes = {key: _box_name(f"vagrant.{key}", table.get(key, getattr(defaults, key)), getattr(defaults, key))
             for key in ("box_virtualbox", "box_libvirt")}
    driver = _choice("vagrant.libvirt_driver", table.get("libvirt_driver", defaults.libvirt_driver), LIBVIRT_DRIVERS)
    boot_timeout = _integer("vagrant.boot_timeout", table.get("boot_timeout", defaults.boot_timeout), *BOOT_TIMEOUT_S)
    return VagrantSettings(provider=provider, libvirt_driver=driver, boot_timeout=boot_timeout, **boxes)


def _box_name(where: str, value: Any, example: str) -> str:
    # Rendered into a Ruby string of the Vagrantfile: "#{...}" there would run as root when Vagrant loads it.
    return template_safe(where, value, BOX_NAME_PATTERN, f"a box name like {example!r} (letters, digits, '.', '_', "
                         "'-', one '/')")


def check(values: VagrantSettings) -> VagrantSettings:
    """Settings read back from a state file hold only what templates may print (as resolve() ensures for lab.toml)."""
    for key in ("box_virtualbox", "box_libvirt"):
        _box_name(f"vagrant.{key}", getattr(values, key), getattr(VagrantSettings(), key))
    _choice("vagrant.provider", values.provider, VAGRANT_PROVIDERS)
    _choice("vagrant.libvirt_driver", values.libvirt_driver, LIBVIRT_DRIVERS)
    _integer("vagrant.boot_timeout", values.boot_timeout, *BOOT_TIMEOUT_S)
    return values


def from_dict(data: Mapping[str, Any]) -> VagrantSettings:
    """The settings a state file recorded (missing keys: the defaults of their time)."""
    return VagrantSettings(**data)


def of(topology: Topology) -> VagrantSettings:
    """The vagrant settings of a resolved lab."""
    return topology.settings(TABLE)
