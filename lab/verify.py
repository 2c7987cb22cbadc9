"""`lab test`: runs the testinfra checks of every step against the running lab, through pytest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import pytest

from lab import checkplugin
from lab.errors import ChecksFailed, NotUp, TopologyError
from lab.hosts import HostFacts
from lab.recipes.discovery import discover_steps
from lab.state import LabDir
from lab.topology import Topology


def check_files(max_step: int | None = None, only_step: int | None = None) -> list[Path]:
    files: list[Path] = []
    for step in discover_steps():
        if (max_step is None or step.number <= max_step) and only_step in (None, step.number):
            files += sorted(step.folder.glob("test_*.py"))
    return files


@dataclass(frozen=True)
class SkippedCheck:
    """A check that did not apply to this lab, and pytest's reason (e.g. "this lab runs gunicorn")."""

    check: str
    reason: str


def run_checks(
    labdir: LabDir,
    topology: Topology,
    facts: HostFacts,
    tiers: Iterable[str] | None = None,
    junit_xml: Path | None = None,
    max_step: int | None = None,
    extra_args: Iterable[str] = (),
    on_skipped: Callable[[list[SkippedCheck]], None] | None = None,
    only_step: int | None = None,
    observers: Iterable[object] = (),
) -> None:
    """Run the checks; ChecksFailed names the failing ones. on_skipped hears the skipped ones, pass or fail.

    only_step: that step's checks alone (`lab check K`); observers: more pytest plugins that watch the run.
    """
    known = list(topology.stack.tiers)
    chosen = list(tiers) if tiers else known
    unknown = [t for t in chosen if t not in known]
    if unknown:
        raise TopologyError(f"unknown tier {unknown[0]!r}; tiers: {', '.join(known)}")
    if not labdir.ssh_config.exists():
        raise NotUp(f"the lab in {labdir.path} has no ssh_config: run `lab up` first")
    failures = _OutcomeCollector()
    args = [
        "-p", "no:pytest11.testinfra",  # lab gives the `host` fixture itself, per tier
        "-p", "no:cacheprovider", "-q", "--no-header", "-o", "console_output_style=classic",
        "--rootdir", str(labdir.path.parent), "-o", "python_files=test_*.py",
        *(["--junit-xml", str(junit_xml)] if junit_xml else []),
        *extra_args,
        *map(str, check_files(max_step, only_step)),
    ]
    context = checkplugin.CheckContext(labdir, topology, facts, frozenset(chosen))
    code = pytest.main(args, plugins=[checkplugin, context, failures, *observers])
    if failures.skipped and on_skipped:
        on_skipped(failures.skipped)
    if code == pytest.ExitCode.OK:
        return
    if code == pytest.ExitCode.NO_TESTS_COLLECTED:
        raise ChecksFailed(f"no checks matched tiers {', '.join(chosen)}")
    if not failures.failed:
        raise ChecksFailed(f"the checks did not run to the end (pytest exit code {int(code)})")
    raise ChecksFailed(failure_summary(failures.failed))


def failure_summary(failed: list[str], shown: int = 6) -> str:
    """One line naming the failing checks, so the user sees which ones without scrolling back."""
    names = ", ".join(failed[:shown]) + (f" and {len(failed) - shown} more" if len(failed) > shown else "")
    return f"{len(failed)} check(s) failed: {names}"


def check_name(report: pytest.TestReport) -> str:
    """The check as `lab test` names it, e.g. "step3_appserver/test_web.py::test_gunicorn_…[web2]", whatever the rootdir."""
    path = Path(report.location[0])
    return f"{path.parent.name}/{path.name}::{report.nodeid.rsplit('::', 1)[-1]}"


def skip_reason(report: pytest.TestReport) -> str:
    """The reason given to pytest.skip(), without pytest's "Skipped: " prefix."""
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr or "")
    return reason.removeprefix("Skipped: ")


class _OutcomeCollector:
    def __init__(self) -> None:
        self.failed: list[str] = []
        self.skipped: list[SkippedCheck] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.failed:
            self.failed.append(check_name(report))
        elif report.skipped:
            self.skipped.append(SkippedCheck(check_name(report), skip_reason(report)))
