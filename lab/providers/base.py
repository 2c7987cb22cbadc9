"""What every provider does: make hosts reachable by SSH, report them, and remove every trace of them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable

from lab.state import LabDir
from lab.topology import Topology

Say = Callable[[str], None]


@dataclass(frozen=True)
class SshEndpoint:
    """How to reach one host over SSH; rendered into the lab's one ssh_config."""

    host: str
    address: str
    port: int
    user: str
    identity_file: str
    host_key: str | None  # "ssh-ed25519 AAAA..." when the provider knows it; None means accept on first use


@dataclass(frozen=True)
class HostFacts:
    """What recipes may need to know about how a host reaches the outside world, and nothing else."""

    proxy_url: str | None  # HTTP proxy for apt and pip, or None for direct access
    wheelhouse: str | None = None  # a folder on the host shared by every host, to download each wheel once
    control_address: str | None = None  # where lab's SSH comes from, as hosts see it; None: from anywhere


class Provider(ABC):
    """A way to make hosts. Recipes and checks never learn which one made a host."""

    name: str

    @abstractmethod
    def preflight(self, topology: Topology, labdir: LabDir, say: Say) -> None:
        """Refuse early and cleanly: missing root, packages, a clashing subnet, a taken lab name."""

    @abstractmethod
    def up(self, topology: Topology, labdir: LabDir, state: dict[str, Any], say: Say) -> list[SshEndpoint]:
        """Create or start every host (idempotently), recording each resource in state before making it."""

    @abstractmethod
    def facts(self, topology: Topology) -> HostFacts:
        """The facts recipes get about the hosts' surroundings."""

    @abstractmethod
    def status(self, labdir: LabDir, state: dict[str, Any]) -> dict[str, str]:
        """Each host's state, in the provider's own words ("running", "stopped", "not created")."""

    def cpu_seconds(self, labdir: LabDir, state: dict[str, Any]) -> dict[str, float]:
        """CPU time each host has used so far, for benchmarks; providers that cannot tell return {}."""
        return {}

    @abstractmethod
    def destroy(self, labdir: LabDir, state: dict[str, Any], say: Say) -> None:
        """Remove everything the state file records, tolerating what is already gone."""
