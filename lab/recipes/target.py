"""What a recipe works on: one host as a Target, whose helpers check every command and record every change,
and the rolling restarts that take a web host out of the balancer's pool meanwhile."""

from __future__ import annotations

import hashlib
import posixpath
import secrets as secrets_module
import shlex
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Protocol

import jinja2

from lab.hosts import HostFacts
from lab.remote import CommandResult, RemoteHost
from lab.secrets import redact
from lab.system import gist
from lab.topology import Host, Topology


class RecipeError(Exception):
    """A recipe could not bring its host to the wanted state; the message says which command failed."""


def quoted(command: str, *args: object) -> str:
    """`command` with each arg shell-quoted into its %s placeholders, as testinfra's host.run(command, *args) does;
    without args, `command` as it is (so a literal % needs no doubling)."""
    return command % tuple(shlex.quote(str(arg)) for arg in args) if args else command


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
                 secrets: dict[str, str], templates: jinja2.Environment, connect: Callable[[str], RemoteHost],
                 rollout: Rollout | None = None, on_behalf_of: str | None = None) -> None:
        self.remote = remote
        self.host = host
        self.topology = topology
        self.facts = facts
        self.secrets = secrets
        self._templates = templates
        self._connect = connect
        self._rollout = rollout or Rollout()
        self._on_behalf_of = on_behalf_of  # the host whose recipe works here, when this is another host's Target
        self._others: dict[str, Target] = {}
        self.changes: list[str] = []
        self.events: set[str] = set()

    # -- commands -------------------------------------------------------------------------
    # Every command takes its variable parts as args, quoted into its %s placeholders (see quoted()):
    # t.run("useradd --home-dir %s %s", home, user).
    # A secret never goes into a command (ps, sudo's journal and error messages would show it): it goes on stdin
    # (`t.run("psql -q", user="postgres", stdin=sql)`) or into a 0600 file (`t.secret_file(...)`).
    def run(self, command: str, *args: object, user: str | None = None, check: bool = True,
            stdin: str | None = None) -> CommandResult:
        """Run a command; one that exits non-zero raises RecipeError (its message redacted of every secret of the
        lab) unless check=False. `stdin` is sent to the command's standard input and shown nowhere."""
        command = quoted(command, *args)
        result = self._remote_run(command, user, stdin)
        if check and not result.ok:
            where = f" on {self.host.name}" if self._on_behalf_of else ""
            raise RecipeError(self.redact(
                f"`{_short(command)}` exited {result.exit_code}{where}: {gist(result.stderr or result.stdout)}"))
        return result

    def test(self, command: str, *args: object, user: str | None = None, stdin: str | None = None) -> bool:
        """Whether a command exits 0."""
        return self._remote_run(quoted(command, *args), user, stdin).ok

    def _remote_run(self, command: str, user: str | None, stdin: str | None) -> CommandResult:
        if stdin is None:
            return self.remote.run(command, user=user)
        return self.remote.run(command, user=user, stdin=stdin)

    def redact(self, text: str) -> str:
        """`text` with every per-lab secret value (.lab/secrets.toml) replaced by [secret]."""
        return redact(text, self.secrets.values())

    def changed(self, what: str, *events: str) -> None:
        self.changes.append(what)
        self.events.update(events)

    def notified(self, *events: str) -> bool:
        return bool(self.events.intersection(events))

    def on(self, host_name: str) -> "Target":
        """Another host of the lab (e.g. web1, whose static files the balancer copies), with the same checked helpers;
        a failed command there names that host, and what changes there is not this host's change."""
        if host_name not in self._others:  # one connection per peer and Target (a Target is one thread's)
            self._others[host_name] = Target(self._connect(host_name), self.topology.host(host_name), self.topology,
                                             self.facts, self.secrets, self._templates, self._connect, self._rollout,
                                             on_behalf_of=self.host.name)
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
        query = "dpkg-query -W -f='${Package} ${db:Status-Abbrev}\\n' " + _words(names) + " 2>/dev/null"
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
            "apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=120 " + _words(missing)
        )
        if not self.test(install):
            self.run("apt-get update -q")  # package lists too old for the archive: refresh once
            self.run(install)
        self.changed(f"installed {' '.join(missing)}")
        return True

    def file(self, path: str, content: str | bytes, mode: int = 0o644, owner: str = "root", group: str = "root",
             events: Iterable[str] = ()) -> bool:
        """The file with this content, mode and owner, written whole (a temporary name in its own folder, renamed).

        A file others may not read (no "other" bits in `mode`: settings with passwords, keys) is made with umask 077
        and its content sent on stdin, so it is never readable by anyone else, not even for a moment.
        """
        data = content.encode() if isinstance(content, str) else content
        wanted = f"{mode:o} {owner} {group} {hashlib.sha256(data).hexdigest()}"
        current = self.run("stat -c %s %s 2>/dev/null && sha256sum %s | cut -d' ' -f1", "%a %U %G", path, path,
                           check=False).stdout.split()
        if " ".join(current) == wanted:
            return False
        owners, octal = f"{owner}:{group}", f"{mode:o}"
        if len(current) == 4 and current[3] == wanted.split()[3]:
            self.run("chown %s %s && chmod %s %s", owners, path, octal, path)
            self.changed(f"set {path} to {mode:o} {owner}:{group}", *events)
            return True
        if mode & 0o007 or not _is_text(data):
            tmp = f"/tmp/.lab-upload-{random_token()}"  # a fresh name: nobody can plant a link there beforehand
            self.remote.put(data, tmp)
            self.run("chown %s %s && chmod %s %s && mkdir -p $(dirname %s) && mv -f %s %s",
                     owners, tmp, octal, tmp, path, tmp, path)
        else:
            self._write_private(path, data.decode(), owners, octal)
        self.changed(f"{'updated' if current else 'created'} {path}", *events)
        return True

    def secret_file(self, path: str, content: str, owner: str = "root", group: str = "root", mode: int = 0o600,
                    events: Iterable[str] = ()) -> bool:
        """A file holding a secret for a program (mode 0600, or 0640 for the group of the one service that reads
        it): written atomically, its content sent on stdin, never on a command line nor through a /tmp name."""
        if mode & 0o007:
            raise ValueError(f"a secret file must not be readable by others (mode {mode:o})")
        return self.file(path, content, mode, owner, group, events)

    def _write_private(self, path: str, text: str, owners: str, octal: str) -> None:
        folder = posixpath.dirname(path) or "/"
        # mkdir before the umask (a missing parent folder gets the usual 0755); mktemp makes a fresh 0600 name
        # beside the file, so the rename is atomic and the content is never readable by others.
        script = quoted(
            'mkdir -p %s && umask 077 && tmp=$(mktemp %s) && trap \'rm -f "$tmp"\' EXIT && cat > "$tmp" && '
            'chown %s "$tmp" && chmod %s "$tmp" && mv -f "$tmp" %s',
            folder, f"{folder}/.lab-write-XXXXXXXX", owners, octal, path)
        self.run(script, stdin=text)

    def template(self, path: str, name: str, mode: int = 0o644, owner: str = "root", group: str = "root",
                 events: Iterable[str] = (), **values: Any) -> bool:
        text = self._templates.get_template(name).render(host=self.host, topology=self.topology, **values)
        return self.file(path, text, mode, owner, group, events)

    def absent(self, path: str, *events: str) -> bool:
        if not self.test("test -e %s || test -L %s", path, path):
            return False
        self.run("rm -rf %s", path)
        self.changed(f"removed {path}", *events)
        return True

    def directory(self, path: str, mode: int = 0o755, owner: str = "root", group: str = "root") -> bool:
        current = self.run("stat -c %s %s 2>/dev/null", "%F %a %U %G", path, check=False).stdout.strip()
        if current == f"directory {mode:o} {owner} {group}":
            return False
        self.run("mkdir -p %s && chown %s %s && chmod %s %s", path, f"{owner}:{group}", path, f"{mode:o}", path)
        self.changed(f"{'fixed' if current else 'created'} directory {path}")
        return True

    def service(self, name: str, restart: bool = False, reload: bool = False) -> bool:
        """The unit enabled and running; restarted (or reloaded) when asked because its inputs changed."""
        did = False
        if not self.test("systemctl is-enabled --quiet %s", name):
            self.run("systemctl enable --quiet %s", name)
            self.changed(f"enabled {name}")
            did = True
        if not self.test("systemctl is-active --quiet %s", name):
            self.run("systemctl start %s", name)
            self.changed(f"started {name}")
            return True
        if restart or reload:
            self.run("systemctl %s %s", "reload" if reload and not restart else "restart", name)
            self.changed(f"{'reloaded' if reload and not restart else 'restarted'} {name}")
            did = True
        return did

    # -- interrupt safety ---------------------------------------------------------------------
    # An interrupted `lab up` leaves its current command running on the host (SSH without a pty sends no hangup).
    # Work that takes several commands, or long enough to be caught by a re-run, goes through these helpers.
    LOCK_DIR = "/run/lock"
    OWED_DIR = "/var/lib/lab/owed"

    def locked(self, key: str, command: str, *args: object) -> str:
        """`command` (args quoted in as by run) wrapped in a host-side lock named after key: a re-run waits for a
        leftover run instead of racing it."""
        lock = f"{self.LOCK_DIR}/lab-{hashlib.sha1(key.encode()).hexdigest()[:12]}.lock"
        return quoted("flock %s sh -c %s", lock, quoted(command, *args))

    def completed(self, marker: str, command: str, *args: object) -> bool:
        """Make something that takes several commands so that it is either complete or made again from scratch.

        `command` must start from scratch (remove what an interrupted run left); the marker file is written
        only after it succeeded, so its absence means "redo". Runs under locked(marker). Returns whether it ran.
        """
        if self.test("test -e %s", marker):
            return False
        q = shlex.quote(marker)  # shell code around shell code: pasted, not quoted in as one argument
        made = self.run(self.locked(marker, f"test -e {q} && exit 0; ({quoted(command, *args)}) && touch {q} && echo lab-made"))
        return "lab-made" in made.stdout

    @contextmanager
    def owed(self, key: str) -> Iterator[bool]:
        """Around a change and its follow-up (a config written, then its service restarted): yields whether an
        earlier run was interrupted between the two, so the follow-up is still done although the change is not
        seen again. A marker on the host spans the block; only finishing the block removes it (so an interrupt
        anywhere inside costs at most one restart more than needed)."""
        marker = f"{self.OWED_DIR}/{key}"
        earlier = self.run("test -e %s && echo owed; mkdir -p %s && touch %s", marker, self.OWED_DIR, marker).stdout
        yield "owed" in earlier
        self.run("rm -f %s", marker)

    def wait_for_port(self, address: str, port: int, seconds: float = 180) -> None:
        """Services start asynchronously; checks that run right after `lab up` must find them listening.

        Generous on purpose: a healthy host answers at once, but a software-emulated VM can take a minute or
        more to bring PostgreSQL or an app server up, and giving up early would fail a lab that is fine.
        """
        deadline = time.monotonic() + seconds
        while not self.test("ss -Hltn %s | grep -q %s", f"sport = :{port}", f"{address}:{port}"):
            if time.monotonic() > deadline:
                raise RecipeError(f"nothing listens on {address}:{port} after {seconds:.0f} s")
            time.sleep(0.2)


def random_token() -> str:
    return secrets_module.token_hex(8)


def _is_text(data: bytes) -> bool:
    """Whether data survives the trip as text on stdin (invoke sends str)."""
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def _words(names: Iterable[str]) -> str:
    return " ".join(shlex.quote(name) for name in names)


def _short(command: str) -> str:
    return command if len(command) < 120 else command[:117] + "..."
