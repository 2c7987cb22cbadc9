"""`lab failover db`: promote the standby, point every writer at it, fence the old primary, and prove no confirmed
transfer was lost (a small write prober runs through the balancer meanwhile)."""

from __future__ import annotations

import html
import http.cookiejar
import re
import ssl
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Callable

from lab import lifecycle
from lab.errors import LabError
from lab.recipes import RecipeError, RecipeResult
from lab.recipes.scheduler import template_environment
from lab.recipes.target import Target
from lab.remote import RemoteHost
from lab.system import Say
from lab.topology import Overrides, Topology

PROBE_MAX_SECONDS = 90  # the prober's hard bounds: a failover that takes longer is reported as such
PROBE_MAX_ATTEMPTS = 2000
PROBE_BEFORE_S = 3.0  # confirmed transfers before the failover starts: what must survive it
PROBE_AFTER_S = 3.0
REQUEST_TIMEOUT_S = 10
TRANSFER_ID = re.compile(r'id="transfer-confirmation"[^>]*data-transfer-id="(\d+)"')
OPTION = re.compile(r'<option value="([^"]+)"')
CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


class NoStandby(LabError):
    """`lab failover db` on a lab without a hot standby to promote."""

    exit_code = 65


class FailoverFailed(LabError):
    """The failover could not be completed (the standby did not promote, a writer could not be repointed)."""

    exit_code = 66


@dataclass
class Attempt:
    started: float
    ended: float
    ok: bool
    amount: str
    transfer_id: int | None = None  # the CONTRACT's data-transfer-id, when the site gives one


@dataclass
class FailoverReport:
    old_primary: str
    new_primary: str
    seconds: float  # from the first step (pause or fence) to the writers repointed
    refused_write_s: float  # the longest time no write was confirmed, from the prober's view
    failed_requests: int
    attempts: int
    confirmed_before: int
    lost: list[str] = field(default_factory=list)  # confirmed before the failover, absent after it

    def summary(self) -> str:
        return (f"failover {self.old_primary} → {self.new_primary} in {self.seconds:.1f} s: writes refused or held "
                f"for {self.refused_write_s:.1f} s, {self.failed_requests} of {self.attempts} requests failed, "
                f"{self.confirmed_before} transfers confirmed before it, {len(self.lost)} lost")


class WriteProber:
    """One customer signing in through the balancer and transferring small, distinct amounts back and forth, one
    request at a time, until stopped (or its bounds are reached)."""

    def __init__(self, url: str, username: str, password: str, context: ssl.SSLContext | None = None) -> None:
        self.url, self.username, self.password = url.rstrip("/"), username, password
        jar = http.cookiejar.CookieJar()
        handlers: list = [urllib.request.HTTPCookieProcessor(jar)]
        if context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=context))
        self.opener = urllib.request.build_opener(*handlers)
        self.attempts: list[Attempt] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="write-prober", daemon=True)
        self.accounts: list[str] = []

    def _get(self, path: str) -> str:
        with self.opener.open(self.url + path, timeout=REQUEST_TIMEOUT_S) as response:
            return response.read().decode()

    def _post(self, path: str, form: dict[str, str]) -> str:
        data = urllib.parse.urlencode(form).encode()
        request = urllib.request.Request(self.url + path, data=data, headers={"Referer": self.url + path})
        with self.opener.open(request, timeout=REQUEST_TIMEOUT_S) as response:
            return response.read().decode()

    def sign_in(self) -> None:
        page = self._get(lifecycle.LOGIN_PATH)
        self._post(lifecycle.LOGIN_PATH, {"username": self.username, "password": self.password,
                                          "csrfmiddlewaretoken": CSRF.search(page).group(1)})
        form = self._get("/transfer/")
        self.accounts = [number for number in dict.fromkeys(OPTION.findall(form)) if number]  # not "---"
        if len(self.accounts) < 2:
            raise FailoverFailed("the write prober found fewer than two accounts to transfer between on /transfer/")

    def start(self) -> None:
        self.sign_in()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(REQUEST_TIMEOUT_S + 5)

    def _run(self) -> None:
        began = time.monotonic()
        for k in range(PROBE_MAX_ATTEMPTS):
            if self._stop.is_set() or time.monotonic() - began > PROBE_MAX_SECONDS:
                return
            # Distinct amounts (3.01, 3.02, ...): a transfer is found again by its amount when the site gives no id.
            amount = str(Decimal(3) + Decimal(k + 1) / 100)
            source, target = (self.accounts[0], self.accounts[1]) if k % 2 == 0 else (self.accounts[1], self.accounts[0])
            started = time.monotonic()
            try:
                form = self._get("/transfer/")
                page = self._post("/transfer/", {"from_account": source, "to_account": target, "amount": amount,
                                                 "csrfmiddlewaretoken": CSRF.search(form).group(1)})
                found = TRANSFER_ID.search(page)
                ok = "Transferred" in html.unescape(page)
                self.attempts.append(Attempt(started, time.monotonic(), ok, amount,
                                             int(found.group(1)) if found else None))
            except Exception:  # refused, reset, timed out, 5xx: a failed request, whatever the cause
                self.attempts.append(Attempt(started, time.monotonic(), False, amount))
                time.sleep(0.2)


def refused_seconds(attempts: list[Attempt]) -> float:
    """The longest stretch without a confirmed write: from the end of one confirmed transfer to the next one's."""
    confirmed = [a.ended for a in attempts if a.ok]
    if not confirmed:
        return attempts[-1].ended - attempts[0].started if attempts else 0.0
    gaps = [b - a for a, b in zip(confirmed, confirmed[1:])]
    if attempts and not attempts[-1].ok:
        gaps.append(attempts[-1].ended - confirmed[-1])
    return max(gaps, default=0.0)


def _targets(project: lifecycle.Project, state: dict, topology: Topology) -> Callable[[str], Target]:
    """A checked Target on any host of the lab, as recipes get them (for the failover's few commands)."""
    templates = template_environment()
    facts, secrets = lifecycle.facts_of(state, topology), project.labdir.secrets()

    def connect(name: str) -> RemoteHost:
        return RemoteHost(project.labdir, name)

    def target(name: str) -> Target:
        return Target(connect(name), topology.host(name), topology, facts, secrets, templates, connect)

    return target


def _sql(t: Target, query: str, database: str = "postgres") -> str:
    return t.run("psql -XtA -d %s -c %s", database, query, user="postgres").stdout.strip()


def failover_db(project: lifecycle.Project, say: Say, on_result: Callable[[RecipeResult], None] = lambda r: None,
                probe: bool = True) -> FailoverReport:
    """Promote the standby and make it the primary every writer uses; the old primary is stopped and fenced."""
    state, topology = lifecycle.running_lab(project)
    if not topology.db_standbys:
        raise NoStandby(f"this lab has no standby to fail over to (db hosts: "
                        f"{', '.join(h.name for h in topology.tier('db'))}); `lab up --db=2` adds db2")
    # provision/ is loaded late; the standby's unit and data folder are named once, by the step that makes it
    from provision.step5_pooler.recipes import POOLED_TIERS, pgbouncer_admin, write_pgbouncer_config
    from provision.step6_standby.recipes import CLUSTER_UNIT, DATA_DIR

    old, new = topology.db_primary, topology.db_standbys[0]
    target = _targets(project, state, topology)
    standby = target(new.name)
    # Its cluster stopped (e.g. the primary the last failover fenced, before a `lab up`): no psql error, one line.
    if not standby.test("systemctl is-active --quiet %s", CLUSTER_UNIT) or _sql(standby, "SELECT pg_is_in_recovery()") != "t":
        raise FailoverFailed(f"{new.name} is not a standby in recovery: `lab up` to make it one first")
    prober = None
    if probe:
        login = lifecycle.creds(project)
        context = None
        if login.url.startswith("https") and hasattr(lifecycle, "ca_file"):
            context = ssl.create_default_context(cafile=str(lifecycle.ca_file(project)))
        prober = WriteProber(login.url, login.username, login.password, context)
        prober.start()
        time.sleep(PROBE_BEFORE_S)
    started = time.monotonic()
    pooled = topology.db.pooler == "pgbouncer"
    # Every host with a pgbouncer of its own: the web hosts, and the api hosts (step 6) alike.
    webs = [target(h.name) for h in topology.hosts if h.tier in POOLED_TIERS]
    try:
        if pooled:
            say(f"pausing pgbouncer on {', '.join(t.host.name for t in webs)} (requests wait, none fail)")
            for web in webs:
                pgbouncer_admin(web, "PAUSE")
        # Fence first: a clean stop sends the standby every WAL record the old primary wrote (walsender), then it
        # may never start as a primary again (standby.signal: it comes back read-only, in recovery).
        fenced = target(old.name)
        fenced.run("systemctl stop %s", CLUSTER_UNIT)
        fenced.run("runuser -u postgres -- touch %s", f"{DATA_DIR}/standby.signal")
        say(f"fenced {old.name}: stopped, and it restarts only as a read-only standby ({_since(started)})")
        _sql(standby, "SELECT pg_promote(true, 60)")
        if _sql(standby, "SELECT pg_is_in_recovery()") != "f":
            raise FailoverFailed(f"{new.name} did not leave recovery after pg_promote")
        say(f"promoted {new.name}: it takes writes now ({_since(started)})")
        promoted = replace(topology, db=replace(topology.db, primary=new.name))
        state = project.labdir.read()
        state["topology"] = promoted.to_dict()
        state["choices"] = {**(state["choices"] or {}), **Overrides(db_primary=new.name).choices()}
        project.labdir.write(state)
        if pooled:
            for web in webs:
                web.topology = promoted
                write_pgbouncer_config(web, promoted.db_primary, promoted.db_primary)  # no standby until `lab up`
                pgbouncer_admin(web, "RELOAD")
                pgbouncer_admin(web, "RESUME")
            say(f"pgbouncer on {', '.join(w.host.name for w in webs)} points at {new.name} and resumed ({_since(started)})")
    except Exception as error:
        if pooled:  # never leave the site paused
            for web in webs:
                web.run("psql -X -q -h /var/run/postgresql -p 6432 -U postgres pgbouncer -c RESUME",
                        user="postgres", check=False)
        if prober is not None:
            prober.stop()
        if isinstance(error, RecipeError):
            raise FailoverFailed(f"failover {old.name} → {new.name} stopped: {error}") from None
        raise
    if not pooled:
        # No pooler: the site's settings name the database; they are rewritten and the app servers restarted host
        # by host (the rolling restarts of `lab up`, which also makes the old primary a standby of the new one).
        say("no pooler: rewriting the site's settings, rolling restart of the app servers")
        lifecycle.up(project, Overrides(), say, on_result)
    else:
        _repoint_direct_writers(topology, promoted, target, say, started)
    seconds = time.monotonic() - started
    if prober is None:
        return FailoverReport(old.name, new.name, seconds, 0.0, 0, 0, 0)
    time.sleep(PROBE_AFTER_S)
    prober.stop()
    attempts = prober.attempts
    before = [a for a in attempts if a.ok and a.ended <= started]
    confirmed = [a for a in attempts if a.ok]
    lost = _lost(target(new.name), confirmed)
    return FailoverReport(old.name, new.name, seconds, refused_seconds(attempts),
                          sum(1 for a in attempts if not a.ok), len(attempts), len(before), lost)


def _repoint_direct_writers(topology: Topology, promoted: Topology, target: Callable[[str], Target], say: Say,
                            started: float) -> None:
    """The hosts that run the site's code without a pooler of their own (step 6's queue workers go straight to
    PostgreSQL): their database settings now name the new primary, and their worker restarts onto them."""
    from provision.step1_bootstrap.recipes import SITE_TIERS
    from provision.step2_database.recipes import database_settings
    from provision.step5_pooler.recipes import POOLED_TIERS
    from provision.step6_queue.recipes import worker

    direct = [h.name for h in topology.hosts if h.tier in SITE_TIERS and h.tier not in POOLED_TIERS]
    for name in direct:
        writer = target(name)
        writer.topology = promoted
        try:
            database_settings(writer)
            worker(writer)  # restarts on the settings' "app-config" event, then answers a ping
        except RecipeError as error:
            raise FailoverFailed(f"{promoted.db.primary} is the primary now, but {name} still points at the old one: "
                                 f"{error}; `lab up` repoints it") from None
    if direct:
        say(f"{', '.join(direct)} (no pooler there) point at {promoted.db.primary} and restarted ({_since(started)})")


def _since(started: float) -> str:
    """How far into the failover a phase ended, for its progress line."""
    return f"{time.monotonic() - started:.1f} s in"


def _lost(primary: Target, confirmed: list[Attempt]) -> list[str]:
    """The confirmed transfers the new primary does not have: by id (the CONTRACT's confirmation) or else by amount."""
    if not confirmed:
        return []
    if all(a.transfer_id is not None for a in confirmed):
        ids = ",".join(str(a.transfer_id) for a in confirmed)
        present = set(_sql(primary, f"SELECT id FROM accounts_transfer WHERE id IN ({ids})", "bank").split())
        return [str(a.transfer_id) for a in confirmed if str(a.transfer_id) not in present]
    amounts = ",".join(a.amount for a in confirmed)
    query = f"SELECT amount FROM accounts_transfer WHERE amount IN ({amounts}) AND created_at > now() - interval '10 minutes'"
    present = {Decimal(x) for x in _sql(primary, query, "bank").split()}
    return [a.amount for a in confirmed if Decimal(a.amount) not in present]
