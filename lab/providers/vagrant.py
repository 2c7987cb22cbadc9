"""The Vagrant provider: real VMs for attendees' laptops (not built yet: see issue 3)."""

from __future__ import annotations

from typing import Any

from lab.errors import ProviderError
from lab.providers.base import HostFacts, Provider, Say, SshEndpoint
from lab.state import LabDir
from lab.topology import Topology

NOT_YET = "the vagrant provider is not available yet; use --provider=local"


class VagrantProvider(Provider):
    name = "vagrant"

    def preflight(self, topology: Topology, labdir: LabDir, say: Say) -> None:
        raise ProviderError(NOT_YET)

    def up(self, topology: Topology, labdir: LabDir, state: dict[str, Any], say: Say) -> list[SshEndpoint]:
        raise ProviderError(NOT_YET)

    def facts(self, topology: Topology) -> HostFacts:
        return HostFacts(proxy_url=None)

    def status(self, labdir: LabDir, state: dict[str, Any]) -> dict[str, str]:
        raise ProviderError(NOT_YET)

    def destroy(self, labdir: LabDir, state: dict[str, Any], say: Say) -> None:
        raise ProviderError(NOT_YET)
