"""What every provider does: make hosts reachable by SSH, report them, and remove every trace of them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from lab.errors import ProviderError, SnapshotsUnsupported, UsageError
from lab.hosts import HostFacts, SshEndpoint
from lab.state import LabDir
from lab.system import Say
from lab.topology import Topology


@dataclass(frozen=True)
class CachePart:
    """One piece of the machine's caches a `lab up` needs from the network (`lab cache export`, `lab up --offline`).

    kind names its role across machines ("rootfs", "packages", "wheels"); path is relative to the cache root;
    marker, relative to path, exists only once the part is whole; owner ("user:group") is given back on import.
    """

    kind: str
    what: str
    path: str
    marker: str
    owner: str = ""


class Provider(ABC):
    """A way to make hosts. Recipes and checks never learn which one made a host."""

    name: str

    @abstractmethod
    def preflight(self, topology: Topology, labdir: LabDir, say: Say) -> None:
        """Refuse early and cleanly: missing root, packages, a clashing subnet, a taken lab name."""

    @abstractmethod
    def up(self, topology: Topology, labdir: LabDir, state: dict[str, Any], say: Say,
           offline: bool = False) -> list[SshEndpoint]:
        """Create or start every host (idempotently), recording each resource in state before making it.

        offline: nothing is fetched from the network; lab.offline has checked that cache_parts() are whole."""

    def cache_parts(self, topology: Topology) -> list[CachePart]:
        """What this provider's `lab up` of topology fetches from the network once and keeps in the machine's caches.

        A provider with no "packages" part has its hosts download packages themselves: it cannot run offline."""
        return []

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

    # `project` is a lab.lifecycle.Project (not imported: lifecycle imports the providers).
    def host_cpu_seconds(self, project: Any) -> dict[str, float]:
        """CPU seconds each running host has used so far (its cgroup locally, its /proc/stat on a VM)."""
        return self.cpu_seconds(project.labdir, project.labdir.read())

    def pin_cpus(self, project: Any, cpus: str | None) -> None:
        """Run the lab's hosts on these CPUs (a cpulist like "0" or "0-2"); None: back on every CPU."""
        raise ProviderError(f"the {self.name} provider cannot pin its hosts to CPUs: use --shared-cpus")

    def snapshot(self, project: Any, name: str) -> dict[str, float]:
        """Save every host as it is now under `name` (replacing an older one); seconds per host. See lab.workshop.

        project is a lab.lifecycle.Project (not imported: lifecycle imports the providers)."""
        raise SnapshotsUnsupported(f"the {self.name} provider cannot snapshot its hosts, so `lab reset` cannot rewind them")

    def restore(self, project: Any, name: str, say: Say = lambda message: None) -> dict[str, float]:
        """Put every host back as snapshot `name` saved it, and running; seconds per host."""
        raise SnapshotsUnsupported(f"the {self.name} provider cannot snapshot its hosts, so `lab reset` cannot rewind them")

    def power_off(self, project: Any, host: str) -> None:
        """Pull HOST's plug (`lab demo crash`): every process gone at once, no clean shutdown; `lab up` boots it."""
        raise ProviderError(f"the {self.name} provider cannot power a host off")

    @abstractmethod
    def destroy(self, labdir: LabDir, state: dict[str, Any], say: Say) -> None:
        """Remove everything the state file records, tolerating what is already gone."""
