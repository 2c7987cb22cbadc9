"""Fixtures shared by the test modules: an empty project folder, the usual four-host topology, the recipes' templates.

Helpers that are not fixtures (the scratch lab runner, run_main, linux_topology) are in lab.testing, which the
benchmarks use too.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

import jinja2
import pytest

from lab import lifecycle
from lab.hosts import HostFacts
from lab.recipes import Recipe, converge
from lab.testing import linux_topology
from lab.topology import Overrides, Topology


def pytest_configure(config: pytest.Config) -> None:
    # Started as a background job of a non-interactive shell (`./test.sh &`), the suite inherits SIGINT ignored, and
    # so would every lab it runs: the Ctrl-C tests would test nothing. Ctrl-C is what they are about: restore it here
    # (exec'd children, xdist's workers and each `lab`, then start with the default again).
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def no_lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder, the current one, with its own LAB_DIR and no LAB_* settings leaking in from outside."""
    for key in list(os.environ):
        if key.startswith("LAB_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LAB_DIR", str(tmp_path / ".lab"))
    return tmp_path


@pytest.fixture
def recorded_up(monkeypatch: pytest.MonkeyPatch) -> list[Topology]:
    """`lab up` with nothing made: each call's topology (what the flags and settings resolved to) is recorded."""
    seen: list[Topology] = []

    class Report:
        def summary(self) -> str:
            return "done"

    def fake_up(project, overrides, say, on_result, max_step=None, forget=False, on_converged=None, offline=False):
        seen.append(project.topology(overrides))
        return Report()

    monkeypatch.setattr(lifecycle, "up", fake_up)
    return seen


@pytest.fixture
def topology() -> Topology:
    """lb1, web1, web2 and db1 on the default subnet, as resolved on Linux."""
    return linux_topology(overrides=Overrides(web=2))


@pytest.fixture(scope="session")
def templates() -> jinja2.Environment:
    """The very jinja2 Environment converge() hands to recipes, captured from inside a recipe."""
    captured: list[jinja2.Environment] = []

    class Quiet:
        """A host no recipe here may touch."""

        def run(self, command, user=None):
            raise AssertionError("no command expected")

        def put(self, data, remote_path):
            raise AssertionError("no upload expected")

        def get(self, remote_path):
            raise AssertionError("no download expected")

        def close(self):
            pass

    grab = Recipe("t.grab", 1, ("db",), lambda t: captured.append(t._templates))
    report = converge(linux_topology(), [grab], lambda name: Quiet(), HostFacts(proxy_url=None), {})
    assert [r.status for r in report.results] == ["ok"]
    return captured[0]
