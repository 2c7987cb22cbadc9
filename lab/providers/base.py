"""What every provider does: make hosts reachable by SSH, report them, and remove every trace of them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from lab.errors import UsageError
from lab.hosts import HostFacts, SshEndpoint
from lab.state import LabDir
from lab.system import Say
from lab.topology import Topology


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

    def build_box(self, say: Say, rebuild: bool = False) -> str:
        """`lab box build`: a provider whose hosts start from a box builds it here; the others have none."""
        raise UsageError(f"the {self.name} provider makes its hosts without a box: `lab box build` is for vagrant")

    def cpu_seconds(self, labdir: LabDir, state: dict[str, Any]) -> dict[str, float]:
        """CPU time each host has used so far, for benchmarks; providers that cannot tell return {}."""
        return {}

    @abstractmethod
    def destroy(self, labdir: LabDir, state: dict[str, Any], say: Say) -> None:
        """Remove everything the state file records, tolerating what is already gone."""
