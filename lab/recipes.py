"""Runs the provision/ recipes: per host in parallel, in step order, each reporting what it changed."""

from __future__ import annotations

import hashlib
import importlib
import shlex
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol

import jinja2

from lab.errors import ProvisionFailed
from lab.hosts import HostFacts
from lab.remote import CommandResult, RemoteHost
from lab.system import gist
from lab.topology import Host, Topology

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROVISION_DIR = PROJECT_ROOT / "provision"


class RecipeError(Exception):
    """A recipe could not bring its host to the wanted state; the message says which command failed."""


@dataclass(frozen=True)
class Recipe:
    """A named, idempotent piece of provisioning, introduced by one workshop step."""

    name: str  # "<step folder>.<function>", unique
    step: int
    tiers: tuple[str, ...]
    func: Callable[["Target"], None]
    requires: tuple[str, ...] = ()
    first_only: bool = False  # run on the tier's first host only (migrations, sample data)
    after: tuple[str, ...] = ()  # recipes that must have finished everywhere first, whether or not they succeeded

    def applies_to(self, host: Host, topology: Topology) -> bool:
        if host.tier not in self.tiers:
            return False
        return not self.first_only or topology.tier(host.tier)[0].name == host.name


def recipe(tiers: Iterable[str], requires: Iterable[str] = (), first_only: bool = False, after: Iterable[str] = ()):
    """Mark a function in provision/stepN_*/recipes.py as a recipe (collected in definition order).

    `requires`: skipped unless those recipes succeeded everywhere; `after`: runs once they finished everywhere,
    successful or not (the recipe itself looks at what they left, e.g. which web hosts answer).
    """

    def mark(func: Callable[["Target"], None]) -> Callable[["Target"], None]:
        func.lab_recipe = {"tiers": tuple(tiers), "requires": tuple(requires), "first_only": first_only,  # type: ignore[attr-defined]
                           "after": tuple(after)}
        return func

    return mark


@dataclass(frozen=True)
class Step:
    number: int
    title: str
    package: str  # e.g. "provision.step2_database"

    @property
    def folder(self) -> Path:
        return PROVISION_DIR / self.package.rsplit(".", 1)[1]


def discover_steps() -> list[Step]:
    """The workshop's steps, one folder each: provision/stepN_name/ with recipes.py and checks."""
    steps = []
    for folder in sorted(PROVISION_DIR.glob("step[0-9]*_*")):
        module = importlib.import_module(f"provision.{folder.name}")
        steps.append(Step(number=module.STEP, title=module.TITLE, package=f"provision.{folder.name}"))
    return sorted(steps, key=lambda s: s.number)


def load_recipes(max_step: int | None = None) -> list[Recipe]:
    recipes: list[Recipe] = []
    for step in discover_steps():
        if max_step is not None and step.number > max_step:
            continue
        module = importlib.import_module(f"{step.package}.recipes")
        for attribute in vars(module).values():
            spec = getattr(attribute, "lab_recipe", None)
            if spec is not None and getattr(attribute, "__module__", None) == module.__name__:
                recipes.append(Recipe(name=f"{step.folder.name}.{attribute.__name__}", step=step.number, func=attribute, **spec))
    names = [r.name for r in recipes]
    for index, r in enumerate(recipes):
        for needed in r.requires + r.after:
            if needed not in names[:index]:
                raise ValueError(f"recipe {r.name} requires {needed}, which is not an earlier recipe")
    return recipes


@dataclass
class RecipeResult:
    host: str
    recipe: str
    step: int
    status: str  # "changed" | "ok" | "failed" | "skipped"
    changes: list[str] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0


@dataclass
class ConvergeReport:
    results: list[RecipeResult]
    seconds: float

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def changes(self) -> int:
        return sum(len(r.changes) for r in self.results)

    def summary(self) -> str:
        hosts = len({r.host for r in self.results})
        parts = f"{self.count('changed')} changed, {self.count('ok')} ok, {self.count('failed')} failed, {self.count('skipped')} skipped"
        verdict = "no changes: the lab was already converged" if self.changes == 0 and not self.count("failed") else f"{self.changes} change{'s' if self.changes != 1 else ''}"
        return f"{len(self.results)} recipes on {hosts} hosts: {parts}; {verdict} ({self.seconds:.1f} s)"


# -- rolling restarts: one web host at a time out of the balancer's pool ---------------------------------------

BALANCER_POOL_ATTRIBUTE = "BALANCER_POOL"  # the recipes module of the step that balances the web tier defines it


class BalancerPool(Protocol):
    """How the balancing step takes a web host out of its pool and back (step 5: nginx's upstream)."""

    def serving(self, t: "Target") -> set[str] | None:
        """The web hosts the balancer sends requests to now; None while there is no balancer running yet."""

    def apply(self, t: "Target", down: frozenset[str]) -> None:
        """Mark `down` hosts so no new request goes to them, gracefully, and return once requests in flight to
        them have finished; every other healthy host is in the pool."""


class Rollout:
    """Shared by every Target of one converge: app servers restart one host at a time, each out of the pool."""

    def __init__(self, pool: BalancerPool | None = None) -> None:
        self.pool = pool
        self._lock = threading.RLock()  # reentrant: a recipe in a window may also look at the pool
        self._drained: set[str] = set()

    @contextmanager
    def window(self, t: "Target") -> Iterator[bool]:
        """Serialize with every other host's window; yield whether the host is out of the pool meanwhile.

        The host goes back once the block ends without an error (the block's own health check passed);
        a host whose restart failed stays out, and the balancer's recipe keeps it out.
        """
        with self._lock:
            drained = self._drain(t)
            yield drained
            if drained:
                self._drained.discard(t.host.name)
                self.pool.apply(t, frozenset(self._drained))  # type: ignore[union-attr]

    @contextmanager
    def held(self) -> Iterator[frozenset[str]]:
        """No window opens meanwhile; yields the hosts out of the pool now (a failed restart leaves one out)."""
        with self._lock:
            yield frozenset(self._drained)

    def _drain(self, t: "Target") -> bool:
        if self.pool is None:
            return False
        serving = self.pool.serving(t)
        if not serving or t.host.name not in serving:
            return False  # no balancer yet, or it sends this host nothing anyway
        if not serving - self._drained - {t.host.name}:
            return False  # the only host left to serve: it restarts in place, as gracefully as its server can
        self._drained.add(t.host.name)
        self.pool.apply(t, frozenset(self._drained))
        return True


def balancer_pool(recipes: Iterable[Recipe]) -> BalancerPool | None:
    """The BALANCER_POOL of the loaded steps, if one of them balances the web tier (none with --step below it)."""
    for module_name in dict.fromkeys(r.func.__module__ for r in recipes):
        pool = getattr(sys.modules[module_name], BALANCER_POOL_ATTRIBUTE, None)
        if pool is not None:
            return pool
    return None


class Target:
    """What a recipe works on: one host, with idempotent helpers that record every change they make."""

    def __init__(self, remote: RemoteHost, host: Host, topology: Topology, facts: HostFacts,
                 secrets: dict[str, str], templates: jinja2.Environment, peers: Callable[[str], RemoteHost],
                 rollout: Rollout | None = None) -> None:
        self.remote = remote
        self.host = host
        self.topology = topology
        self.facts = facts
        self.secrets = secrets
        self._templates = templates
        self._peers = peers
        self._rollout = rollout or Rollout()
        self._others: dict[str, Target] = {}
        self.changes: list[str] = []
        self.events: set[str] = set()

    # -- commands -------------------------------------------------------------------------
    def run(self, command: str, user: str | None = None, check: bool = True) -> CommandResult:
        result = self.remote.run(command, user=user)
        if check and not result.ok:
            raise RecipeError(f"`{_short(command)}` exited {result.exit_code}: {gist(result.stderr or result.stdout)}")
        return result

    def test(self, command: str, user: str | None = None) -> bool:
        return self.remote.run(command, user=user).ok

    def changed(self, what: str, *events: str) -> None:
        self.changes.append(what)
        self.events.update(events)

    def notified(self, *events: str) -> bool:
        return bool(self.events.intersection(events))

    def peer(self, host_name: str) -> RemoteHost:
        """Another host of the lab (e.g. the balancer copying static files from web1)."""
        return self._peers(host_name)

    def on(self, host_name: str) -> "Target":
        """Another host of the lab with this Target's helpers; what changes there is not this host's change."""
        if host_name not in self._others:  # one connection per peer and Target (a Target is one thread's)
            self._others[host_name] = Target(self.peer(host_name), self.topology.host(host_name), self.topology,
                                             self.facts, self.secrets, self._templates, self._peers, self._rollout)
        return self._others[host_name]

    @contextmanager
    def rolling(self, what: str) -> Iterator[bool]:
        """A restart of `what` that costs no request: one host at a time, and while the balancer has other hosts
        to serve, this one is out of its pool (yields True) until the block, ending with a health check, is done."""
        started = time.monotonic()
        with self._rollout.window(self) as drained:
            yield drained
        if drained:
            self.changed(f"took {self.host.name} out of the balancer's pool for {what}, back after "
                         f"{time.monotonic() - started:.1f} s")

    @contextmanager
    def balancer_pool(self) -> Iterator[frozenset[str]]:
        """For the balancer's own recipe: no host rolls meanwhile; yields the hosts out of the pool right now."""
        with self._rollout.held() as drained:
            yield drained

    # -- state helpers --------------------------------------------------------------------
    def packages(self, *names: str) -> bool:
        query = "dpkg-query -W -f='${Package} ${db:Status-Abbrev}\\n' " + " ".join(names) + " 2>/dev/null"
        installed = {line.split()[0] for line in self.run(query, check=False).stdout.splitlines() if line.split()[1:2] == ["ii"]}
        missing = [n for n in names if n not in installed]
        if not missing:
            return False
        # An interrupted `lab up` leaves its apt-get running on the host (SSH without a pty sends no hangup):
        # let it finish, then repair whatever it left half-configured.
        self.run("timeout 600 sh -c 'while pgrep -x apt-get >/dev/null || pgrep -x dpkg >/dev/null; do sleep 0.5; done'")
        if self.run("dpkg --audit", check=False).stdout.strip():
            self.run("dpkg --configure -a")  # an earlier run was interrupted mid-install
        # policy-rc.d keeps new services stopped until their recipe has configured them (a service started
        # with the package's defaults, e.g. nginx on 0.0.0.0:80, would hold ports the lab's config needs).
        install = (
            "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && "
            "trap 'rm -f /usr/sbin/policy-rc.d' EXIT && "
            "apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=120 " + " ".join(missing)
        )
        if not self.test(install):
            self.run("apt-get update -q")  # package lists too old for the archive: refresh once
            self.run(install)
        self.changed(f"installed {' '.join(missing)}")
        return True

    def file(self, path: str, content: str | bytes, mode: int = 0o644, owner: str = "root", group: str = "root",
             events: Iterable[str] = ()) -> bool:
        data = content.encode() if isinstance(content, str) else content
        wanted = f"{mode:o} {owner} {group} {hashlib.sha256(data).hexdigest()}"
        q = shlex.quote(path)
        current = self.run(f"stat -c '%a %U %G' {q} 2>/dev/null && sha256sum {q} | cut -d' ' -f1", check=False).stdout.split()
        if " ".join(current) == wanted:
            return False
        if len(current) == 4 and current[3] == wanted.split()[3]:
            self.run(f"chown {owner}:{group} {q} && chmod {mode:o} {q}")
            self.changed(f"set {path} to {mode:o} {owner}:{group}", *events)
            return True
        tmp = f"/tmp/.lab-upload-{hashlib.sha1(path.encode()).hexdigest()[:12]}"
        self.remote.put(data, tmp)
        self.run(
            f"chown {owner}:{group} {tmp} && chmod {mode:o} {tmp} && mkdir -p $(dirname {q}) && mv -f {tmp} {q}"
        )
        self.changed(f"{'updated' if current else 'created'} {path}", *events)
        return True

    def template(self, path: str, name: str, mode: int = 0o644, owner: str = "root", group: str = "root",
                 events: Iterable[str] = (), **values: Any) -> bool:
        text = self._templates.get_template(name).render(host=self.host, topology=self.topology, **values)
        return self.file(path, text, mode, owner, group, events)

    def absent(self, path: str, *events: str) -> bool:
        q = shlex.quote(path)
        if not self.test(f"test -e {q} || test -L {q}"):
            return False
        self.run(f"rm -rf {q}")
        self.changed(f"removed {path}", *events)
        return True

    def directory(self, path: str, mode: int = 0o755, owner: str = "root", group: str = "root") -> bool:
        q = shlex.quote(path)
        current = self.run(f"stat -c '%F %a %U %G' {q} 2>/dev/null", check=False).stdout.strip()
        if current == f"directory {mode:o} {owner} {group}":
            return False
        self.run(f"mkdir -p {q} && chown {owner}:{group} {q} && chmod {mode:o} {q}")
        self.changed(f"{'fixed' if current else 'created'} directory {path}")
        return True

    def service(self, name: str, restart: bool = False, reload: bool = False) -> bool:
        """The unit enabled and running; restarted (or reloaded) when asked because its inputs changed."""
        did = False
        if not self.test(f"systemctl is-enabled --quiet {name}"):
            self.run(f"systemctl enable --quiet {name}")
            self.changed(f"enabled {name}")
            did = True
        if not self.test(f"systemctl is-active --quiet {name}"):
            self.run(f"systemctl start {name}")
            self.changed(f"started {name}")
            return True
        if restart or reload:
            self.run(f"systemctl {'reload' if reload and not restart else 'restart'} {name}")
            self.changed(f"{'reloaded' if reload and not restart else 'restarted'} {name}")
            did = True
        return did

    # -- interrupt safety ---------------------------------------------------------------------
    # An interrupted `lab up` leaves its current command running on the host (SSH without a pty sends no hangup).
    # Work that takes several commands, or long enough to be caught by a re-run, goes through these helpers.
    LOCK_DIR = "/run/lock"
    OWED_DIR = "/var/lib/lab/owed"

    def locked(self, key: str, command: str) -> str:
        """`command` wrapped in a host-side lock named after key: a re-run waits for a leftover run instead of racing it."""
        lock = f"{self.LOCK_DIR}/lab-{hashlib.sha1(key.encode()).hexdigest()[:12]}.lock"
        return f"flock {lock} sh -c {shlex.quote(command)}"

    def completed(self, marker: str, command: str) -> bool:
        """Make something that takes several commands so that it is either complete or made again from scratch.

        `command` must start from scratch (remove what an interrupted run left); the marker file is written
        only after it succeeded, so its absence means "redo". Runs under locked(marker). Returns whether it ran.
        """
        q = shlex.quote(marker)
        if self.test(f"test -e {q}"):
            return False
        made = self.run(self.locked(marker, f"test -e {q} && exit 0; ({command}) && touch {q} && echo lab-made"))
        return "lab-made" in made.stdout

    @contextmanager
    def owed(self, key: str) -> Iterator[bool]:
        """Around a change and its follow-up (a config written, then its service restarted): yields whether an
        earlier run was interrupted between the two, so the follow-up is still done although the change is not
        seen again. A marker on the host spans the block; only finishing the block removes it (so an interrupt
        anywhere inside costs at most one restart more than needed)."""
        marker = f"{self.OWED_DIR}/{key}"
        earlier = self.run(f"test -e {marker} && echo owed; mkdir -p {self.OWED_DIR} && touch {marker}").stdout
        yield "owed" in earlier
        self.run(f"rm -f {marker}")

    def wait_for_port(self, address: str, port: int, seconds: float = 180) -> None:
        """Services start asynchronously; checks that run right after `lab up` must find them listening.

        Generous on purpose: a healthy host answers at once, but a software-emulated VM can take a minute or
        more to bring PostgreSQL or an app server up, and giving up early would fail a lab that is fine.
        """
        probe = f"ss -Hltn 'sport = :{port}' | grep -q '{address}:{port}'"
        deadline = time.monotonic() + seconds
        while not self.test(probe):
            if time.monotonic() > deadline:
                raise RecipeError(f"nothing listens on {address}:{port} after {seconds:.0f} s")
            time.sleep(0.2)


def _short(command: str) -> str:
    return command if len(command) < 120 else command[:117] + "..."


class _Progress:
    """Which recipes have finished on which hosts, so cross-host requirements can wait for them."""

    def __init__(self, needed_hosts: dict[str, set[str]]) -> None:
        self._needed = needed_hosts
        self._done: dict[str, set[str]] = {name: set() for name in needed_hosts}
        self._failed: dict[str, str] = {}
        self._cond = threading.Condition()

    def finish(self, recipe: str, host: str, ok: bool) -> None:
        with self._cond:
            self._done[recipe].add(host)
            if not ok:
                self._failed.setdefault(recipe, host)
            self._cond.notify_all()

    def wait_all(self, recipe: str) -> None:
        """Block until the recipe has finished (or failed, or been skipped) on every host it applies to; a recipe
        this converge does not run (a run of chosen recipes only) has nothing to wait for."""
        with self._cond:
            self._cond.wait_for(lambda: self._done.get(recipe, set()) >= self._needed.get(recipe, set()))

    def wait(self, recipe: str) -> str | None:
        """Block until the recipe is done everywhere; return the failed host's name, if any."""
        with self._cond:
            self._cond.wait_for(lambda: recipe in self._failed or self._done[recipe] >= self._needed[recipe])
            return self._failed.get(recipe)


def converge(
    topology: Topology,
    recipes: list[Recipe],
    connect: Callable[[str], RemoteHost],
    facts: HostFacts,
    secrets: dict[str, str],
    on_result: Callable[[RecipeResult], None] = lambda r: None,
) -> ConvergeReport:
    """Apply recipes to every host: one thread per host, in order, waiting only where a recipe requires another."""
    started = time.monotonic()
    templates = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(PROVISION_DIR)), undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
    )
    progress = _Progress({r.name: {h.name for h in topology.hosts if r.applies_to(h, topology)} for r in recipes})
    rollout = Rollout(balancer_pool(recipes))
    results: list[RecipeResult] = []
    lock = threading.Lock()

    def record(result: RecipeResult) -> None:
        with lock:
            results.append(result)
        on_result(result)

    def provision(host: Host) -> None:
        chain = [r for r in recipes if r.applies_to(host, topology)]
        opened: list[RemoteHost] = []

        def open_remote(name: str) -> RemoteHost:
            remote = connect(name)
            opened.append(remote)
            return remote

        failed_before: str | None = None
        try:
            remote = open_remote(host.name)
            target = Target(remote, host, topology, facts, secrets, templates, open_remote, rollout)
            for r in chain:
                for finished in r.after:
                    progress.wait_all(finished)
                if failed_before is None:
                    for needed in r.requires:
                        blocker = progress.wait(needed)
                        if blocker:
                            failed_before = f"needs {needed}, which did not complete on {blocker}"
                            break
                if failed_before is not None:
                    record(RecipeResult(host.name, r.name, r.step, "skipped", error=failed_before))
                    progress.finish(r.name, host.name, ok=False)
                    continue
                t0 = time.monotonic()
                before = len(target.changes)
                try:
                    r.func(target)
                except Exception as error:  # a recipe's failure is reported per host, not raised
                    message = " ".join(str(error).split()) or type(error).__name__
                    record(RecipeResult(host.name, r.name, r.step, "failed", target.changes[before:], message, time.monotonic() - t0))
                    progress.finish(r.name, host.name, ok=False)
                    failed_before = f"an earlier recipe failed on {host.name}"
                    continue
                changes = target.changes[before:]
                record(RecipeResult(host.name, r.name, r.step, "changed" if changes else "ok", changes, "", time.monotonic() - t0))
                progress.finish(r.name, host.name, ok=True)
        except Exception as error:  # could not even connect: every recipe of this host is skipped
            message = " ".join(str(error).split()) or type(error).__name__
            for r in chain:
                if not any(res.host == host.name and res.recipe == r.name for res in results):
                    record(RecipeResult(host.name, r.name, r.step, "failed", [], f"cannot reach {host.name}: {message}"))
                    progress.finish(r.name, host.name, ok=False)
        finally:
            for remote in opened:
                remote.close()

    pool = ThreadPoolExecutor(max_workers=len(topology.hosts), thread_name_prefix="recipe")
    try:
        futures = [pool.submit(provision, h) for h in topology.hosts]
        for future in futures:
            while not future.done():
                time.sleep(0.05)  # short waits keep the main thread able to take Ctrl-C
            future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    report = ConvergeReport(sorted(results, key=lambda r: (r.step, r.host)), time.monotonic() - started)
    return report


def raise_for_failures(report: ConvergeReport) -> None:
    failed = [r for r in report.results if r.status == "failed"]
    if failed:
        first = failed[0]
        raise ProvisionFailed(
            f"{len(failed)} recipe(s) failed; first: {first.recipe} on {first.host}: {first.error}"
        )
