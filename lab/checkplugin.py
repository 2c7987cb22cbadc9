"""The pytest plugin behind `lab test`: check modules name their TIERS and get a testinfra `host` per lab host."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from lab import hostcheck
from lab.hosts import HostFacts
from lab.secrets import redact
from lab.state import LabDir
from lab.topology import Host, Topology


@dataclass(frozen=True)
class CheckContext:
    labdir: LabDir
    topology: Topology
    facts: HostFacts
    tiers: frozenset[str]

    def module_tiers(self, module: Any) -> set[str]:
        return set(getattr(module, "TIERS", ())) & self.tiers

    def pytest_configure(self, config: pytest.Config) -> None:
        config.stash[CONTEXT] = self


CONTEXT = pytest.StashKey[CheckContext]()


def _context(config: pytest.Config) -> CheckContext:
    return config.stash[CONTEXT]


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    context = _context(config)
    items[:] = [item for item in items if context.module_tiers(getattr(item, "module", None))]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "host" in metafunc.fixturenames:
        context = _context(metafunc.config)
        tiers = context.module_tiers(metafunc.module)
        names = [h.name for h in context.topology.hosts if h.tier in tiers]
        if not names:  # pytest's own reason would be "got empty parameter set ['host']": say what is missing
            # (a module of a tier not chosen with --tier is dropped at collection and never gets here)
            reason = f"this lab has no {' or '.join(sorted(tiers)) or 'such'} host"
            metafunc.parametrize("host", [pytest.param(None, marks=pytest.mark.skip(reason=reason))], ids=["none"],
                                 indirect=True, scope="module")
            return
        metafunc.parametrize("host", names, ids=names, indirect=True, scope="module")


@pytest.fixture(scope="module")
def host(request: pytest.FixtureRequest) -> Any:
    """The testinfra host under check."""
    return hostcheck.get_host(_context(request.config).labdir, request.param)


@pytest.fixture
def node(host: Any, lab: Topology) -> Host:
    """The lab's model of the host under check (name, tier, IP)."""
    return lab.host(host.backend.hostname)


@pytest.fixture(scope="session")
def lab(request: pytest.FixtureRequest) -> Topology:
    return _context(request.config).topology


@pytest.fixture(scope="session")
def labdir(request: pytest.FixtureRequest) -> LabDir:
    """The lab's directory: its CA (for HTTPS checks from this machine) and its secrets."""
    return _context(request.config).labdir


@pytest.fixture(scope="session")
def facts(request: pytest.FixtureRequest) -> HostFacts:
    return _context(request.config).facts


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    """A failing check's report (the terminal, the JUnit XML) never shows a secret of the lab: each is redacted."""
    outcome = yield
    report = outcome.get_result()
    values = _context(item.config).labdir.secret_values()
    if not values:
        return
    if report.longrepr is not None and any(value in str(report.longrepr) for value in values):
        report.longrepr = redact(str(report.longrepr), values)
    report.sections = [(title, redact(body, values)) for title, body in report.sections]
