"""The lab's verbs as a library: up, status, creds, test, ssh, destroy (bench: lab.bench). The CLI is a thin layer."""

from __future__ import annotations

import os
import shlex
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from lab import offline as offline_module, recipes as recipes_module
from lab import tls, verify
from lab.errors import (HostKeyChanged, LabBusy, NotEnoughMemory, NotUp, ProviderError, TopologyError, UsageError,
                        one_line)
from lab.providers import get_provider
from lab.hosts import HostFacts
from lab.recipes import ConvergeReport, RecipeResult
from lab.remote import (RemoteHost, check_host_keys, forget_host_key, pin_host_keys, render_known_hosts,
                        render_ssh_config)
from lab.services import DOWN, UNKNOWN, floating_holders, probe as probe_services, services_of
from lab.files import write_atomically
from lab.machine.paths import cache_root
from lab.progress import elapsed
from lab.state import LabDir
from lab.system import Say, available_memory_mb
from lab.topology import Overrides, Topology, choice_flag, load_file, resolve

CONFIG_FILE = "lab.toml"
# The site's demo user, made by app/accounts/management/commands/load_sample_data.py (DEMO_USERNAME there; a unit
# test keeps the two equal); its password is the lab's own secret "demo_password" in .lab/secrets.toml.
DEMO_USERNAME = "demo"
LOGIN_PATH = "/accounts/login/"
FAILOVER_CHOICE = "db_primary"  # remembered like a flag by `lab failover db`; kept by --forget too


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
    services: dict[str, str]  # the tier's main units: "up", "down" or "unknown" (the host did not answer)
    holds: str | None = None  # the balancer pair's floating address, if this host holds it now


def step_names() -> str:
    """The workshop's steps as found in provision/stepN_name/: "1 bootstrap, 2 database, ..."."""
    return ", ".join(f"{step.number} {step.folder.name.split('_', 1)[1]}" for step in recipes_module.discover_steps())


def check_step(max_step: int | None, bare: bool = False) -> None:
    """`--step K` names one of the workshop's steps (the provision/stepN_* folders), or is not given; with bare,
    0 too (`lab up --step 0`: the hosts alone, for an attendee who does step 1 by hand)."""
    if bare and max_step == 0:
        return
    if max_step is not None and max_step not in [step.number for step in recipes_module.discover_steps()]:
        bare_hosts = "0 (the bare hosts), " if bare else ""
        raise UsageError(f"--step must be one of the workshop's steps: {bare_hosts}{step_names()} (got {max_step})")


@dataclass(frozen=True)
class UpPlan:
    """What `lab up` builds: the topology, the choices it remembers, and the remembered ones it keeps unasked."""

    topology: Topology
    choices: dict[str, Any]  # written to the state file: applied again by the next `lab up`
    kept: dict[str, Any]  # remembered choices that this run applies though no flag repeated them
    inferred: bool  # kept was read off a lab made before lab remembered choices
    defaults: Topology | None  # what lab.toml, LAB_* and the built-in defaults give alone (None: not a valid lab)

    def keeping(self) -> str:
        """One line saying what is kept, why, and how to change it."""
        what = " and ".join(_choice_words(key, value) for key, value in self.kept.items())
        # the primary is `lab failover db`'s doing, not a flag's: named, never offered as one
        flags = " ".join(choice_flag(key, value) for key, value in self.kept.items() if key != FAILOVER_CHOICE)
        why = "as the lab was made" if self.inferred else f"from your earlier `lab up {flags}`"
        theirs = Overrides.describing(self.defaults).choices() if self.defaults else {}
        back = " ".join(choice_flag(key, theirs[key]) for key in self.kept if key in theirs and key != FAILOVER_CHOICE)
        return f"keeping {what} {why}; {f'`{back}` or ' if back else ''}`--forget` goes back to what lab.toml/LAB_* say"


def _choice_words(key: str, value: Any) -> str:
    """web×2, lb×2, mod_wsgi: a choice as `lab status` and `lab bench` would name it."""
    if key == FAILOVER_CHOICE:
        return f"{value} as the primary (from `lab failover db`)"
    if key == "web" or key.startswith("counts."):
        return f"{key.rpartition('.')[2]}×{value}"
    return str(value)


def plan_up(project: Project, flags: Overrides, state: dict[str, Any] | None, forget: bool = False) -> UpPlan:
    """Resolve the lab `lab up` builds: defaults → lab.toml → LAB_* → remembered choices → this command's flags.

    Remembered choices beat LAB_*: an exported variable is a standing setting like lab.toml, while a flag given to
    this lab was a decision about it; a stale `export LAB_WEB=1` must not shrink a lab made with `--web=2`. A choice
    that equals what lab.toml and LAB_* give is not remembered, so a later change to lab.toml takes effect.
    """
    file_data = load_file(project.root / CONFIG_FILE)

    def resolved(choices: dict[str, Any]) -> Topology:
        return resolve(file_data, os.environ, Overrides.from_choices(choices))

    def resolves(choices: dict[str, Any]) -> Topology | None:
        try:
            return resolved(choices)
        except TopologyError:  # e.g. lab.toml's [hosts.web3] needs the remembered --web=3 to be a valid lab
            return None

    given = flags.choices()
    inferred = False
    earlier: dict[str, Any] = {}
    if state is not None and forget and state["choices"]:
        # Which db host is the primary is what `lab failover db` made true, not a flag: --forget must keep it.
        earlier = {key: value for key, value in state["choices"].items() if key == FAILOVER_CHOICE}
    if state is not None and not forget:
        earlier = state["choices"]
        if earlier is None:  # a lab made before lab remembered choices: keep it as its topology records it
            earlier, inferred = Overrides.describing(Topology.from_dict(state["topology"])).choices(), True
    wanted = {**earlier, **given}
    try:
        topology = resolved(wanted)
    except TopologyError as error:
        remembered = set(earlier) - set(given)
        if not remembered or resolves(given) is None:
            raise  # this command's own flags (or lab.toml, LAB_*) are wrong: the error names the flag or key
        if remembered == {FAILOVER_CHOICE}:
            raise  # --forget keeps which db host is the primary: the error says how to change it
        # Name the remembered flags: the value the error names may come from lab.toml, made wrong only with them.
        flags = " ".join(choice_flag(key, earlier[key]) for key in sorted(remembered))
        raise TopologyError(f"{one_line(error)} (with {flags} remembered in {project.labdir.state_file}; "
                            "`lab up --forget` drops it)") from None
    # A choice is remembered only if the lab would differ without it: one equal to lab.toml/LAB_* lets them govern.
    # Dropped one at a time, each test against what is still kept: two choices that each make the other redundant
    # (`--preset workshop --web=2`) must not both go. The earlier ones are tried first, so this command's win.
    choices = dict(wanted)
    for key in wanted:
        without = {k: v for k, v in choices.items() if k != key}
        if resolves(without) == topology:
            choices = without
    kept = {key: value for key, value in choices.items() if key not in given}
    return UpPlan(topology, choices, kept, inferred and bool(kept), resolves({}))


def memory_wanted(topology: Topology, existing: dict[str, Any] | None) -> dict[str, int]:
    """The memory (MB) of each host `lab up` would make: those the lab does not have yet, each at its tier's size."""
    have = {h["name"] for h in (existing or {}).get("topology", {}).get("hosts", [])}
    return {h.name: h.memory_mb for h in topology.hosts if h.name not in have}


def check_memory(topology: Topology, existing: dict[str, Any] | None) -> None:
    """Refuse, before anything is made, hosts whose memory (what a VM is given, what a local host may use at most)
    is more than the machine has available."""
    wanted = memory_wanted(topology, existing)
    needed, available = sum(wanted.values()), available_memory_mb()
    if needed > available:
        raise NotEnoughMemory(
            f"the {len(wanted)} hosts to make need {needed:,} MB of memory and this machine has {available:,} MB "
            "available: fewer hosts (a smaller --preset or --web), less memory per host ([tiers.X] memory in "
            "lab.toml), or free memory first")


def up(project: Project, overrides: Overrides, say: Say, on_result: Callable[[RecipeResult], None],
       max_step: int | None = None, topology: Topology | None = None, forget: bool = False,
       on_converged: Callable[[Project, Any, int | None, ConvergeReport, Say], None] | None = None,
       offline: bool = False) -> ConvergeReport:
    """Create or start every host, then converge every recipe up to max_step. Safe to repeat and to interrupt.

    Without `topology`, the lab is what plan_up() resolves (earlier flags kept); with it (as `lab bench` switches
    the lab), exactly that topology is built and the remembered choices stay as they were. on_converged(project,
    provider, max_step, report, say) runs once every recipe succeeded, still under the lab's lock (lab.workshop's snapshot).
    """
    check_step(max_step, bare=True)
    labdir = project.labdir
    labdir.refuse_foreign("write into")  # LAB_DIR naming a folder lab did not make: refused before any change
    existing = labdir.read() if labdir.exists() else None
    if topology is None:
        plan = plan_up(project, overrides, existing, forget)
        if plan.kept:
            say(plan.keeping())
        topology, choices = plan.topology, plan.choices
    else:
        choices = existing["choices"] if existing else {}
    provider = get_provider(topology.provider)
    _same_lab(labdir, topology)
    if offline:  # every part in the caches, or refused before anything is made
        offline_module.require_offline(topology)
        say(f"offline: everything comes from the caches in {cache_root()}; nothing is fetched (a package they lack "
            "fails at once)")
    check_memory(topology, existing)
    provider.preflight(topology, labdir, say)  # before anything is written: refusals leave nothing behind
    if existing is not None:  # a running host offering another key than the pinned one: refused before any change
        check_host_keys(labdir, [h.name for h in topology.hosts])
    with labdir.locked():
        state = _same_lab(labdir, topology)
        state = state or labdir.new_state(topology)
        state["topology"] = topology.to_dict()
        state["choices"] = choices
        state["status"] = "creating"
        labdir.write(state)
        try:
            endpoints = pin_host_keys(labdir, provider.up(topology, labdir, state, say, offline=offline))
        except HostKeyChanged:
            # A stopped host came back offering another key: refused, and the lab stays as its last `lab up` left
            # it (not "creating"), with whatever the provider recorded kept so `lab destroy` still finds it.
            if existing is not None:
                state["status"] = existing["status"]
                labdir.write(state)
            raise
        write_atomically(labdir.known_hosts, render_known_hosts(endpoints), fsync=True)
        write_atomically(labdir.ssh_config, render_ssh_config(endpoints, labdir), fsync=True)
        state["status"] = "up"
        labdir.write(state)
        recipes = recipes_module.load_recipes(max_step)
        report = recipes_module.converge(
            topology, recipes, lambda name: RemoteHost(labdir, name), provider.facts(topology),
            {**labdir.secrets(), **lab_authority(project, topology).as_secrets()}, on_result, say,
        )
        recipes_module.raise_for_failures(report)
        if on_converged is not None:
            on_converged(project, provider, max_step, report, say)
        return report


def topology_here(project: Project) -> Topology:
    """The lab of this folder: as it is if it is up, else what a plain `lab up` would make."""
    existing = project.labdir.read() if project.labdir.exists() else None
    return plan_up(project, Overrides(), existing).topology


def _same_lab(labdir: LabDir, topology: Topology) -> dict | None:
    """The existing state, if it is the same lab (name and provider) as the one asked for."""
    state = labdir.read() if labdir.exists() else None
    if state and (state["provider"], state["name"]) != (topology.provider, topology.name):
        raise LabBusy(
            f"this folder's lab is {state['name']!r} on provider {state['provider']}; "
            f"`lab destroy` it before changing to {topology.name!r} on {topology.provider}"
        )
    return state


def running_lab(project: Project) -> tuple[dict, Topology]:
    """The lab's state and topology; NotUp unless its last `lab up` finished."""
    state = project.labdir.read()
    if state["status"] == "creating":
        raise NotUp(f"the last `lab up` in {project.labdir.path} did not finish: run `lab up` again (or `lab destroy`)")
    if state["status"] != "up":
        raise NotUp(f"the lab in {project.labdir.path} is {state['status']}, not up: run `lab up`")
    return state, Topology.from_dict(state["topology"])


def status(project: Project, services: bool = True) -> list[HostStatus]:
    """Each host's state in the provider's words and, for running hosts, whether its tier's main services are up."""
    state = project.labdir.read()
    states = get_provider(state["provider"]).status(project.labdir, state)
    topology = Topology.from_dict(state["topology"])
    running = [h.name for h in topology.hosts if states.get(h.name) == "running"]
    asked = services and project.labdir.ssh_config.exists()
    probed = probe_services(project.labdir, topology, running) if asked else {}
    holding = floating_holders(project.labdir, topology, running) if asked else {}
    rows = []
    for h in topology.hosts:
        units = services_of(topology, h.tier, h.name) if services else ()
        # A host that is not running runs nothing; a running one that was not asked (no ssh_config yet) is unknown.
        found = probed.get(h.name) or {unit: UNKNOWN if h.name in running else DOWN for unit in units}
        rows.append(HostStatus(h.name, h.tier, h.ip, states.get(h.name, "unknown"), found,
                               topology.floating_ip if holding.get(h.name) else None))
    return rows


def describe_holders(topology: Topology, rows: Iterable[HostStatus]) -> str:
    """One line on the balancer pair's floating address: which balancer holds it (`lab status`)."""
    held = [row.name for row in rows if row.holds]
    if not held:
        who = "held by no balancer: the site does not answer there (are nginx and keepalived up on either?)"
    elif len(held) == 1:
        who = f"held by {held[0]}"
    else:
        who = f"held by {' and '.join(held)} at once: they do not hear each other's VRRP adverts"
    return f"floating address {topology.floating_ip} (the site's, keepalived): {who}"


SCHEMES = ("https", "http")


def site_url(topology: Topology, scheme: str = "https") -> str:
    """The site as a browser on this machine reaches it: the balancer pair's floating address, or the one balancer's.

    https is the site; http answers with a redirect to it. A client verifies https against ca_file(project).
    """
    if scheme not in SCHEMES:
        raise UsageError(f"unknown scheme {scheme!r}; the site speaks {' and '.join(SCHEMES)}")
    return f"{scheme}://{topology.site_address}"


def bench_plain_url(topology: Topology) -> str:
    """The site without TLS, for `lab bench --scheme http` only: the balancer's machine-only http-plain port.

    Port 80 answers only redirects, so measuring it would measure 301s; this port proxies like the https site
    (telling the site the request came over TLS), so comparing the two measures what TLS costs.
    """
    return f"http://{topology.site_address}:{topology.port('http-plain')}"  # a pair's floating address too


def monitor_urls(topology: Topology) -> dict[str, str]:
    """Prometheus' and Alertmanager's pages on the monitor host (the machine's links to them); none without one."""
    return {purpose: f"http://{hosts[0].ip}:{topology.port(purpose)}/" for purpose in ("prometheus", "alertmanager")
            if (hosts := topology.serving(purpose))}


def ca_file(project: Project) -> Path:
    """The lab CA's certificate (.lab/ca/ca.crt), for `curl --cacert` and load tests; its key is 0600 beside it.

    It exists once a `lab up` has reached the recipes; NotUp before that.
    """
    cert, _key = tls.ca_paths(project.labdir.path)
    if not cert.exists():
        raise NotUp(f"this lab has no CA yet ({cert} is missing): run `lab up`")
    return cert


def balancer_names(topology: Topology) -> list[str]:
    """Every name a host serving https could have in this lab's stack (lb1..lbN up to the tier's maximum): the CA
    signs for them all, so adding a balancer later needs no new CA."""
    tiers = {link.target for link in topology.stack.links if link.purpose == "https"}
    return [f"{tier}{index}" for tier in sorted(tiers) for index in range(1, topology.stack.tiers[tier].max_count + 1)]


def lab_authority(project: Project, topology: Topology) -> tls.Authority:
    """The lab's CA in .lab/ca/, made on the first `lab up` (its key never leaves this machine)."""
    return tls.ensure_authority(project.labdir.path, topology.name, topology.subnet, balancer_names(topology))


@dataclass(frozen=True)
class Login:
    """Where and as whom to sign in to the lab's site (`lab creds`)."""

    url: str
    login_url: str
    username: str
    password: str


def creds(project: Project) -> Login:
    """The site's URL and its demo user's login; the password is this lab's own, kept in .lab/secrets.toml."""
    topology = Topology.from_dict(project.labdir.read()["topology"])
    url = site_url(topology)
    return Login(f"{url}/", url + LOGIN_PATH, DEMO_USERNAME, project.labdir.secrets()["demo_password"])


def facts_of(state: dict, topology: Topology) -> HostFacts:
    return get_provider(state["provider"]).facts(topology)


def test(project: Project, tiers: Iterable[str] | None, junit_xml: Path | None, max_step: int | None = None,
         on_skipped: Callable[[list[verify.SkippedCheck]], None] | None = None) -> None:
    """Run the checks of steps 1..max_step; on_skipped hears which checks were skipped and why."""
    check_step(max_step)
    state, topology = running_lab(project)
    # A tier this lab has no host of would run no check, and "all checks passed" would then say nothing true.
    unknown = [tier for tier in tiers or () if tier not in topology.stack.tiers]
    if unknown:
        raise TopologyError(f"unknown tier {unknown[0]!r}; tiers: {', '.join(topology.stack.tiers)}")
    empty = [tier for tier in tiers or () if not topology.count(tier)]
    if empty:
        raise TopologyError(f"this lab has no {empty[0]} host, so `--tier {empty[0]}` has nothing to check; its tiers: "
                            f"{', '.join(t for t in topology.stack.tiers if topology.count(t))}")
    not_running = [s.name for s in status(project, services=False) if s.state != "running"]
    if not_running:
        raise NotUp(f"hosts not running: {', '.join(not_running)}; run `lab up`")
    check_host_keys(project.labdir, [h.name for h in topology.hosts])
    verify.run_checks(project.labdir, topology, facts_of(state, topology), tiers, junit_xml, max_step,
                      on_skipped=on_skipped)


def ssh_command(project: Project, host: str, command: Iterable[str], terminal: bool = False) -> list[str]:
    """The ssh command line for `lab ssh`: the same ssh_config Fabric and testinfra use.

    One word is a shell command line for the host (`lab ssh db1 'psql -c "\\dt"'`); several words are run as they
    are, each quoted, so the host's shell does not split or expand them again (`lab ssh web1 echo 'a  b'`). With
    a terminal on this side, a command gets one on the host too (psql's prompt, line editing).
    """
    state, topology = running_lab(project)
    topology.host(host)  # a clear error naming the lab's hosts
    remote = remote_command(command)
    return ["ssh", "-F", str(project.labdir.ssh_config), *(["-t"] if terminal and remote else []), host, *remote]


def remote_command(words: Iterable[str]) -> list[str]:
    """What ssh sends for `lab ssh HOST WORDS`: one word as a shell line, several quoted so they arrive as they are."""
    words = list(words)
    return words if len(words) < 2 else [" ".join(shlex.quote(word) for word in words)]


BOOT_LIMIT_S = 120


def wait_until_booted(labdir: LabDir, hosts: Iterable[str], limit_s: float = BOOT_LIMIT_S) -> None:
    """Until every host's systemd has finished booting (its services started or failed): SSH answering comes first,
    and a check run in between would find PostgreSQL still replaying its log after a snapshot was restored."""

    def booted(name: str) -> str:
        try:
            answer = RemoteHost(labdir, name).run("systemctl is-system-running --wait", timeout=limit_s).stdout.strip()
        except Exception as error:  # no SSH, or still booting at the limit (invoke's own timeout error)
            return f"{name} ({one_line(error)})"
        return "" if answer in ("running", "degraded") else f"{name} ({answer or 'no answer'})"

    names = list(hosts)
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        stuck = [found for found in pool.map(booted, names) if found]
    if stuck:
        raise ProviderError(f"hosts did not finish booting within {limit_s:.0f} s: {', '.join(stuck)}")


def close_ssh_masters(labdir: LabDir, hosts: Iterable[str]) -> None:
    """testinfra's OpenSSH control masters linger for a while; a destroyed lab must leave no process."""
    if not labdir.ssh_config.exists():
        return
    for name in hosts:
        subprocess.run(["ssh", "-F", str(labdir.ssh_config), "-O", "exit", name],
                       capture_output=True, stdin=subprocess.DEVNULL, timeout=10)


def forget_key(project: Project, host: str) -> bool:
    """`lab forget-key HOST`: drop HOST's pinned SSH host key on purpose; returns whether one was pinned."""
    project.labdir.read()  # NotUp when there is no lab here
    Topology.from_dict(project.labdir.read()["topology"]).host(host)  # a clear error naming the lab's hosts
    with project.labdir.locked():
        return forget_host_key(project.labdir, host)


def build_box(say: Say, rebuild: bool = False) -> str:
    """`lab box build`: the vagrant provider's own box, made on this machine (no lab needed); returns its name."""
    return get_provider("vagrant").build_box(say, rebuild=rebuild)


def destroy(project: Project, say: Say) -> bool:
    """Remove the lab using only what .lab/ records; returns False when there was nothing to destroy.

    A lab directory is recognised by its state file: a folder lab did not make (LAB_DIR=., a project, a home) is
    refused (NotALabDir) before anything is touched."""
    labdir = project.labdir
    labdir.refuse_foreign("destroy")
    if not labdir.exists():
        return False
    with labdir.locked():
        state = labdir.read()
        state["status"] = "destroying"
        labdir.write(state)
        close_ssh_masters(labdir, [h["name"] for h in state["topology"]["hosts"]])
        hosts = len(state["topology"]["hosts"])
        with elapsed(say, f"removing the lab's {hosts} hosts, its network and its disks"):  # a full lab: 40 s or more
            get_provider(state["provider"]).destroy(labdir, state, say)
    labdir.remove(keep_results=True)
    return True
