"""`lab test`: runs the testinfra checks of every step against the running lab, through pytest."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Iterable

import pytest

from lab import hostcheck
from lab.errors import ChecksFailed, NotUp, TopologyError
from lab.providers.base import HostFacts
from lab.recipes import discover_steps
from lab.state import LabDir
from lab.topology import TIERS, Topology


def check_files(max_step: int | None = None) -> list[Path]:
    files: list[Path] = []
    for step in discover_steps():
        if max_step is None or step.number <= max_step:
            files += sorted(step.folder.glob("test_*.py"))
    return files


class LabPlugin:
    """Gives check modules their hosts: each module names its TIERS; `host` is parametrized over them."""

    def __init__(self, labdir: LabDir, topology: Topology, facts: HostFacts, tiers: Iterable[str]) -> None:
        self.labdir = labdir
        self.topology = topology
        self.facts_value = facts
        self.tiers = set(tiers)

    def _module_tiers(self, module: Any) -> set[str]:
        return set(getattr(module, "TIERS", ())) & self.tiers

    def pytest_collection_modifyitems(self, session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
        items[:] = [i for i in items if self._module_tiers(i.module)]

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "host" in metafunc.fixturenames:
            names = [h.name for h in self.topology.hosts if h.tier in self._module_tiers(metafunc.module)]
            metafunc.parametrize("host", names, ids=names, indirect=True, scope="module")

    @pytest.fixture(scope="module")
    def host(self, request: pytest.FixtureRequest) -> Any:
        return hostcheck.get_host(self.labdir, request.param)

    @pytest.fixture
    def node(self, host: Any):
        """The lab's model of the host under check (name, tier, IP)."""
        return self.topology.host(host.backend.hostname)

    @pytest.fixture(scope="session")
    def lab(self) -> Topology:
        return self.topology

    @pytest.fixture(scope="session")
    def facts(self) -> HostFacts:
        return self.facts_value

    @pytest.fixture(scope="session")
    def lab_network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.topology.subnet)


def run_checks(
    labdir: LabDir,
    topology: Topology,
    facts: HostFacts,
    tiers: Iterable[str] | None = None,
    junit_xml: Path | None = None,
    max_step: int | None = None,
    extra_args: Iterable[str] = (),
) -> None:
    """Run the checks; ChecksFailed names the first failing one."""
    chosen = list(tiers) if tiers else list(TIERS)
    unknown = [t for t in chosen if t not in TIERS]
    if unknown:
        raise TopologyError(f"unknown tier {unknown[0]!r}; tiers: {', '.join(TIERS)}")
    if not labdir.ssh_config.exists():
        raise NotUp(f"the lab in {labdir.path} has no ssh_config: run `lab up` first")
    failures = _FailureCollector()
    args = [
        "-p", "no:testinfra",  # lab gives the `host` fixture itself, per tier
        "-p", "no:cacheprovider", "-q", "--no-header", "-o", "console_output_style=classic",
        "--rootdir", str(labdir.path.parent), "-o", "python_files=test_*.py",
        *(["--junit-xml", str(junit_xml)] if junit_xml else []),
        *extra_args,
        *map(str, check_files(max_step)),
    ]
    code = pytest.main(args, plugins=[LabPlugin(labdir, topology, facts, chosen), failures])
    if code == pytest.ExitCode.OK:
        return
    if code == pytest.ExitCode.NO_TESTS_COLLECTED:
        raise ChecksFailed(f"no checks matched tiers {', '.join(chosen)}")
    first = failures.failed[0] if failures.failed else f"pytest exit code {int(code)}"
    raise ChecksFailed(f"{len(failures.failed) or 'some'} check(s) failed; first: {first}")


class _FailureCollector:
    def __init__(self) -> None:
        self.failed: list[str] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.failed:
            self.failed.append(report.nodeid.split("/provision/")[-1])
