"""The lab's verbs as a library: up, status, test, bench, ssh, destroy. The CLI is a thin layer over these."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from lab import recipes as recipes_module
from lab import verify
from lab.bench import BenchResult, BenchSettings, run_locust, timestamped_results_dir
from lab.errors import LabBusy, NotUp, UsageError
from lab.providers import get_provider
from lab.providers.base import HostFacts
from lab.recipes import ConvergeReport, RecipeResult
from lab.remote import RemoteHost, render_known_hosts, render_ssh_config
from lab.state import LabDir, write_private
from lab.topology import Overrides, Topology, load_file, resolve, with_web_count

Say = Callable[[str], None]
CONFIG_FILE = "lab.toml"


@dataclass(frozen=True)
class Project:
    """A folder with (optionally) lab.toml, and the lab directory that belongs to it."""

    root: Path
    labdir: LabDir

    @classmethod
    def here(cls, root: Path | None = None, environ: dict[str, str] | None = None) -> "Project":
        environ = dict(os.environ) if environ is None else environ
        root = (root or Path.cwd()).resolve()
        labdir = Path(environ["LAB_DIR"]).resolve() if environ.get("LAB_DIR") else root / ".lab"
        return cls(root, LabDir(labdir))

    def topology(self, overrides: Overrides = Overrides()) -> Topology:
        return resolve(load_file(self.root / CONFIG_FILE), os.environ, overrides)


@dataclass(frozen=True)
class HostStatus:
    name: str
    tier: str
    ip: str
    state: str


def up(project: Project, overrides: Overrides, say: Say, on_result: Callable[[RecipeResult], None],
       max_step: int | None = None, topology: Topology | None = None) -> ConvergeReport:
    """Create or start every host, then converge every recipe up to max_step. Safe to repeat and to interrupt."""
    topology = topology or project.topology(overrides)
    labdir = project.labdir
    provider = get_provider(topology.provider)
    _same_lab(labdir, topology)
    provider.preflight(topology, labdir, say)  # before anything is written: refusals leave nothing behind
    with labdir.locked():
        state = _same_lab(labdir, topology)
        state = state or labdir.new_state(topology)
        state["topology"] = topology.to_dict()
        state["status"] = "creating"
        labdir.write(state)
        endpoints = provider.up(topology, labdir, state, say)
        write_private(labdir.known_hosts, render_known_hosts(endpoints))
        write_private(labdir.ssh_config, render_ssh_config(endpoints, labdir))
        state["status"] = "up"
        labdir.write(state)
        recipes = recipes_module.load_recipes(max_step)
        report = recipes_module.converge(
            topology, recipes, lambda name: RemoteHost(labdir, name), provider.facts(topology),
            labdir.secrets(), on_result,
        )
        recipes_module.raise_for_failures(report)
        return report


def _same_lab(labdir: LabDir, topology: Topology) -> dict | None:
    """The existing state, if it is the same lab (name and provider) as the one asked for."""
    state = labdir.read() if labdir.exists() else None
    if state and (state["provider"], state["name"]) != (topology.provider, topology.name):
        raise LabBusy(
            f"this folder's lab is {state['name']!r} on provider {state['provider']}; "
            f"`lab destroy` it before changing to {topology.name!r} on {topology.provider}"
        )
    return state


def _running_lab(project: Project) -> tuple[dict, Topology]:
    state = project.labdir.read()
    if state["status"] != "up":
        raise NotUp(f"the lab in {project.labdir.path} is {state['status']}, not up: run `lab up`")
    return state, Topology.from_dict(state["topology"])


def status(project: Project) -> list[HostStatus]:
    state = project.labdir.read()
    states = get_provider(state["provider"]).status(project.labdir, state)
    topology = Topology.from_dict(state["topology"])
    return [HostStatus(h.name, h.tier, h.ip, states.get(h.name, "unknown")) for h in topology.hosts]


def facts_of(state: dict, topology: Topology) -> HostFacts:
    return get_provider(state["provider"]).facts(topology)


def test(project: Project, tiers: Iterable[str] | None, junit_xml: Path | None, max_step: int | None = None) -> None:
    state, topology = _running_lab(project)
    not_running = [s.name for s in status(project) if s.state != "running"]
    if not_running:
        raise NotUp(f"hosts not running: {', '.join(not_running)}; run `lab up`")
    verify.run_checks(project.labdir, topology, facts_of(state, topology), tiers, junit_xml, max_step)


def ssh_command(project: Project, host: str, command: Iterable[str]) -> list[str]:
    """The ssh command line for `lab ssh`: the same ssh_config Fabric and testinfra use."""
    state, topology = _running_lab(project)
    topology.host(host)  # a clear error naming the lab's hosts
    return ["ssh", "-F", str(project.labdir.ssh_config), host, *command]


def close_ssh_masters(labdir: LabDir, hosts: Iterable[str]) -> None:
    """testinfra's OpenSSH control masters linger for a while; a destroyed lab must leave no process."""
    if not labdir.ssh_config.exists():
        return
    for name in hosts:
        subprocess.run(["ssh", "-F", str(labdir.ssh_config), "-O", "exit", name],
                       capture_output=True, stdin=subprocess.DEVNULL, timeout=10)


def destroy(project: Project, say: Say) -> bool:
    """Remove the lab using only what .lab/ records; returns False when there was nothing to destroy."""
    labdir = project.labdir
    if not labdir.exists():
        return False
    with labdir.locked():
        state = labdir.read()
        state["status"] = "destroying"
        labdir.write(state)
        close_ssh_masters(labdir, [h["name"] for h in state["topology"]["hosts"]])
        get_provider(state["provider"]).destroy(labdir, state, say)
    labdir.remove(keep_results=True)
    return True


SCENARIOS = {"mix": "locustfile.py", "hello": "hello.py"}
LOADTESTS = recipes_module.PROJECT_ROOT / "loadtests"
MAX_USERS = 500  # load stays bounded: this machine is shared, and the lab's hosts live on it too
MAX_DURATION_S = 900


def bench(project: Project, web: int | None, users: int, spawn_rate: float, duration_s: int, scenario: str,
          say: Say, on_result: Callable[[RecipeResult], None]) -> tuple[BenchResult, Path]:
    """Load-test the site through lb1 with Locust (in its own process), after setting the web tier to --web hosts."""
    if scenario not in SCENARIOS:
        raise UsageError(f"unknown scenario {scenario!r}; scenarios: {', '.join(SCENARIOS)}")
    if not 1 <= users <= MAX_USERS:
        raise UsageError(f"--users must be from 1 to {MAX_USERS} (got {users})")
    if not 1 <= duration_s <= MAX_DURATION_S:
        raise UsageError(f"--duration must be from 1 to {MAX_DURATION_S} seconds (got {duration_s})")
    state, topology = _running_lab(project)
    if web is not None and web != topology.count("web"):
        wanted = with_web_count(topology, web)
        say(f"setting the web tier to {web} host(s) first (as `lab up --web={web}` would)")
        up(project, Overrides(web=web), say, on_result, topology=wanted)
        topology = wanted
    target = f"http://{topology.tier('lb')[0].ip}"
    results_dir = timestamped_results_dir(project.labdir.path)
    say(f"{users} users for {duration_s} s against {target} ({topology.count('web')} web hosts, scenario {scenario})")
    settings = BenchSettings(target, users, spawn_rate, duration_s, LOADTESTS / SCENARIOS[scenario], results_dir)
    return run_locust(settings), results_dir
