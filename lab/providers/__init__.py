"""Providers make the lab's hosts; the registry maps each name to the import path of its class."""

from __future__ import annotations

import importlib

from lab.errors import TopologyError
from lab.providers.base import Provider

# Plain import paths, so a provider's heavy or optional imports only happen when it is chosen.
PROVIDERS: dict[str, str] = {
    "local": "lab.providers.local:LocalProvider",
    "vagrant": "lab.providers.vagrant:VagrantProvider",
}


def get_provider(name: str) -> Provider:
    try:
        target = PROVIDERS[name]
    except KeyError:
        raise TopologyError(f"unknown provider {name!r}; providers: {', '.join(PROVIDERS)}") from None
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)()
