"""What a recipe works on: one host as a Target, whose helpers check every command and record every change,
and the rolling restarts that take a web host out of the balancer's pool meanwhile."""

from __future__ import annotations

import hashlib
import shlex
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Protocol

import jinja2

from lab.hosts import HostFacts
from lab.remote import CommandResult, RemoteHost
from lab.system import gist
from lab.topology import Host, Topology


class RecipeError(Exception):
    """A recipe could not bring its host to the wanted state; the message says which command failed."""


# -- rolling restarts: one web host at a time out of the balancer's pool ---------------------------------------

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
