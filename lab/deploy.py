"""`lab deploy` and `lab rollback` (and fabfile.py's tasks): a release rolled out one web host at a time, and back.

The api hosts (step 6) run the same release and app server as the web hosts: "web host" below means both, web hosts
first. A deploy unpacks the new release on every web host (none switched yet), runs the migrations once from it, then
per web host: drains it from the balancer (lab.recipes.target's rolling window over step 5's pool), switches
`current`, restarts its app server, health-checks it, and lets it rejoin. A host that fails its health check is
switched back and restarted on the release before, rejoins, and the deploy stops there: the old release serves.
The q hosts' Celery workers (step 6) run the release too: they switch last, one at a time, once every app server
serves it (a deploy that stops leaves every host on the release before); a worker's restart is Celery's warm
shutdown, so the tasks it runs finish first, and the queue keeps what arrives meanwhile for the worker's return.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from lab import lifecycle
from lab.errors import DeployFailed, NothingToRollBack, NotUp, one_line
from lab.recipes import RecipeError, Target, load_recipes
from lab.recipes.discovery import balancer_pool
from lab.recipes.scheduler import template_environment
from lab.recipes.target import Rollout
from lab.remote import RemoteHost
from lab.system import Say
from lab.topology import Host
from provision.step1_bootstrap.recipes import (APP_SERVER_TIERS, APP_USER, CURRENT, PREVIOUS, RELEASES, SCHEMA_LOCK,
                                               SETTINGS, VENV, app_archive, switch_current, unpack_release)
from provision.step3_appserver.recipes import SERVER_UNITS, _serving_current_release, _warm_up
from provision.step3_appserver.recipes import static_files as collect_static_files
from provision.step4_deploy.recipes import prune_releases, record_deploy
from provision.step5_balancer.recipes import SITE as BALANCER_SITE
from provision.step5_balancer.recipes import static_files as balancer_static_files
from provision.step6_queue.recipes import WORKER_UNIT, wait_for_ping

WORKER_TIER = "q"  # step 6's queue hosts: a Celery worker of the site's release on each

HEALTH_TIMEOUT_S = 30  # how long a switched host has to answer GET /health/ before the deploy gives up on it


@dataclass
class DeployReport:
    """What a deploy or rollback did: the release now served, the one before, and each host's time out of the pool."""

    release: str
    previous: str | None
    seconds: float = 0.0
    switched: dict[str, float] = field(default_factory=dict)  # host -> seconds its switch took (drained meanwhile)
    unchanged: list[str] = field(default_factory=list)  # hosts already on the release

    def summary(self, verb: str) -> str:
        hosts = ", ".join(f"{h} {s:.1f} s" for h, s in self.switched.items()) or "none"
        kept = f"; already on it: {', '.join(self.unchanged)}" if self.unchanged else ""
        return (f"{verb} release {self.release} (was {self.previous or 'none'}) in {self.seconds:.1f} s; "
                f"hosts switched one at a time: {hosts}{kept}")


def manage_in(folder: str, command: str) -> str:
    """manage.py of a release that is not `current` yet (step 2's manage() always runs the current one)."""
    return f"cd {folder} && BANK_CONFIG={SETTINGS} {VENV}/bin/python manage.py {command}"


def release_name(folder: str) -> str:
    return folder.rstrip("/").rsplit("/", 1)[-1]


class WebTargets:
    """The running lab as deploys see it: one Target per host, sharing one rolling window over the balancer's pool."""

    def __init__(self, project: lifecycle.Project) -> None:
        if not project.labdir.exists():
            raise NotUp(f"no lab in {project.labdir.path}: run `lab up` first")
        state, self.topology = lifecycle.running_lab(project)
        stopped = [s.name for s in lifecycle.status(project, services=False) if s.state != "running"]
        if stopped:
            raise NotUp(f"hosts not running: {', '.join(stopped)}; run `lab up`")
        if not self.topology.tier("web"):
            raise NotUp("this lab has no web hosts to deploy to")
        labdir = project.labdir
        facts = lifecycle.facts_of(state, self.topology)
        templates = template_environment()
        # The pool of whichever step balances the web tier (none on a lab before step 5: hosts reload in place).
        rollout = Rollout(balancer_pool(load_recipes()) if self.topology.serving("http") else None)
        self.opened: list[RemoteHost] = []

        def connect(name: str) -> RemoteHost:
            remote = RemoteHost(labdir, name)
            self.opened.append(remote)
            return remote

        secrets = labdir.secrets()

        def target(host: Host) -> Target:
            return Target(connect(host.name), host, self.topology, facts, secrets, templates, connect, rollout)

        self.targets = {h.name: target(h) for tier in APP_SERVER_TIERS for h in self.topology.tier(tier)}
        self.workers = {h.name: target(h) for h in self.topology.tier(WORKER_TIER)}

    def every_target(self) -> list[Target]:
        """The app servers' hosts, then the workers' hosts: every host that holds the site's releases."""
        return [*self.targets.values(), *self.workers.values()]

    def close(self) -> None:
        for remote in self.opened:
            remote.close()


def _restart_checked(t: Target, drained: bool, health_s: float) -> str | None:
    """Restart (drained) or reload in place the app server, then health-check it; the failure, or None."""
    unit = SERVER_UNITS[t.topology.app_server]
    try:
        t.service(unit, restart=drained, reload=not drained)
        _warm_up(t, unit, health_s)
        _serving_current_release(t, unit, health_s)
    except RecipeError as error:
        return " ".join(str(error).split())
    return None


def _roll(lab: WebTargets, folder: str, say: Say, health_s: float, how: str) -> DeployReport:
    """Every web host onto folder, one at a time; DeployFailed (the host back on its release) at the first failure."""
    report = DeployReport(release_name(folder), None)
    for name, t in lab.targets.items():
        before = t.run("readlink %s", CURRENT).stdout.strip()
        report.previous = report.previous or release_name(before)
        if before == folder:
            report.unchanged.append(name)
            continue
        previous = t.run("readlink %s", PREVIOUS, check=False).stdout.strip()
        started = time.monotonic()
        failure = None
        with t.rolling(f"switching to release {release_name(folder)}") as drained:
            say(f"{name}: {'out of the balancer' if drained else 'in place (nothing to drain to)'}, "
                f"switching to {release_name(folder)}")
            switch_current(t, folder)
            record_deploy(t, release_name(folder), how)
            failure = _restart_checked(t, drained, health_s)
            if failure:
                say(f"{name}: failed its health check ({failure}); back to {release_name(before)}")
                switch_current(t, before)
                if previous:  # what `lab rollback` goes back to stays what it was, not the failed release
                    t.run(f"ln -sfn {previous} {PREVIOUS}.new && mv -T {PREVIOUS}.new {PREVIOUS}")
                record_deploy(t, release_name(before), f"{how}-failed-back")
                again = _restart_checked(t, drained, health_s)
                if again:  # raised inside the window: the host stays out of the pool
                    raise DeployFailed(f"{name} failed on release {release_name(folder)} ({failure}) and again on "
                                       f"{release_name(before)} ({again}); it is out of the balancer's pool: "
                                       f"`lab ssh {name} journalctl -u {SERVER_UNITS[t.topology.app_server]}`")
        if failure:
            switched = ", ".join(report.switched) or "none"
            raise DeployFailed(f"stopped: {name} failed its health check on release {release_name(folder)} ({failure}); "
                               f"it serves {release_name(before)} again, hosts switched before it: {switched}; "
                               f"`lab rollback` puts those back too")
        report.switched[name] = time.monotonic() - started
        say(f"{name}: serving {release_name(folder)}, back in the pool after {report.switched[name]:.1f} s")
    return report


def _switch_workers(lab: WebTargets, folder: str, say: Say, how: str, report: DeployReport) -> None:
    """Each q host's worker onto folder, one at a time (the others take the queue meanwhile); DeployFailed, that host
    back on its release, at the first worker that does not answer a ping through the queue."""
    for name, t in lab.workers.items():
        before = t.run("readlink %s", CURRENT).stdout.strip()
        if before == folder:
            report.unchanged.append(name)
            continue
        started = time.monotonic()
        say(f"{name}: switching its worker to {release_name(folder)} (running tasks finish first)")
        switch_current(t, folder)
        record_deploy(t, release_name(folder), how)
        try:
            t.service(WORKER_UNIT, restart=True)
            wait_for_ping(t)
        except RecipeError as error:
            failure = one_line(error)
            say(f"{name}: its worker failed on {release_name(folder)} ({failure}); back to {release_name(before)}")
            switch_current(t, before)
            record_deploy(t, release_name(before), f"{how}-failed-back")
            try:
                t.service(WORKER_UNIT, restart=True)
            except RecipeError as again:
                raise DeployFailed(f"{name}'s worker failed on release {release_name(folder)} ({failure}) and did not "
                                   f"restart on {release_name(before)} ({one_line(again)}): "
                                   f"`lab ssh {name} journalctl -u {WORKER_UNIT}`") from None
            raise DeployFailed(f"stopped: {name}'s worker failed on release {release_name(folder)} ({failure}); it runs "
                               f"{release_name(before)} again; every app server serves {release_name(folder)}: "
                               "`lab rollback` puts them back") from None
        report.switched[name] = time.monotonic() - started
        say(f"{name}: its worker runs {release_name(folder)}, after {report.switched[name]:.1f} s")


def _finish(lab: WebTargets) -> None:
    """What follows a switch on every host: static files collected from `current` (app servers), old releases pruned."""
    with ThreadPoolExecutor(max_workers=len(lab.every_target())) as pool:
        list(pool.map(lambda t: (collect_static_files(t), prune_releases(t)), lab.targets.values()))
        list(pool.map(prune_releases, lab.workers.values()))
    first = next(iter(lab.targets.values()))
    for lb in lab.topology.serving("http"):  # step 5's recipe copies web1's static tree to a balancer that runs
        balancer = first.on(lb.name)
        if balancer.test("test -e %s", BALANCER_SITE):
            balancer_static_files(balancer)


def deploy(project: lifecycle.Project, say: Say, health_s: float = HEALTH_TIMEOUT_S) -> DeployReport:
    """Roll out app/ as it is now (its content hash names the release); see the module's docstring."""
    started = time.monotonic()
    name, archive = app_archive()
    lab = WebTargets(project)
    try:
        with project.labdir.locked():
            say(f"release {name}: unpacking on {', '.join(t.host.name for t in lab.every_target())}")
            with ThreadPoolExecutor(max_workers=len(lab.every_target())) as pool:
                folders = set(pool.map(lambda t: unpack_release(t, name, archive), lab.every_target()))
            folder = folders.pop()
            first = next(iter(lab.targets.values()))
            try:
                if not first.test(manage_in(folder, "migrate --check --noinput"), user=APP_USER):
                    say(f"{first.host.name}: applying migrations from {name}, once, before any host switches")
                    first.run(first.locked(SCHEMA_LOCK, manage_in(folder, "migrate --noinput")), user=APP_USER)
            except RecipeError as error:
                raise DeployFailed(f"release {name} cannot migrate the database ({one_line(error)}); no host was "
                                   "switched: the release before serves") from None
            report = _roll(lab, folder, say, health_s, "deploy")
            _switch_workers(lab, folder, say, "deploy", report)
            _finish(lab)
    finally:
        lab.close()
    report.seconds = time.monotonic() - started
    return report


def rollback(project: lifecycle.Project, say: Say, health_s: float = HEALTH_TIMEOUT_S) -> DeployReport:
    """Every web host back on the release `previous` names on the first web host, the same rolling way."""
    started = time.monotonic()
    lab = WebTargets(project)
    try:
        with project.labdir.locked():
            first = next(iter(lab.targets.values()))
            folder = first.run("readlink %s", PREVIOUS, check=False).stdout.strip()
            if not folder or not first.test("test -f %s", f"{folder}/manage.py"):
                raise NothingToRollBack(f"nothing to roll back to: {first.host.name} has no earlier release ({PREVIOUS}); nothing "
                                        f"was changed")
            missing = [t.host.name for t in lab.every_target() if not t.test("test -f %s", f"{folder}/manage.py")]
            if missing:
                raise DeployFailed(f"release {release_name(folder)} is not on {', '.join(missing)}: nothing was changed")
            report = _roll(lab, folder, say, health_s, "rollback")
            _switch_workers(lab, folder, say, "rollback", report)
            _finish(lab)
    finally:
        lab.close()
    report.seconds = time.monotonic() - started
    return report


# -- a host's releases, for `fab -H web1 status` ---------------------------------------------------------
STATUS_COMMAND = (
    f"echo current $(readlink {CURRENT}); echo previous $(readlink {PREVIOUS} || true); "
    f"echo releases $(ls -1t {RELEASES}); "
    "for u in gunicorn apache2; do systemctl is-active --quiet $u && echo server $u; done; "
    f"echo serving $(for p in $(pgrep -u {APP_USER}); do readlink /proc/$p/cwd; done | sort -u)"
)


def host_status(run: Callable[[str], str]) -> dict[str, str]:
    """One host's releases, from STATUS_COMMAND run there by `run` (a Fabric Connection's, or lab's own)."""
    found = {"current": "", "previous": "", "releases": "", "server": "none", "serving": ""}
    for line in run(STATUS_COMMAND).splitlines():
        key, _, value = line.partition(" ")
        if key in found:
            found[key] = " ".join(release_name(word) for word in value.split()) if key != "server" else value
    return found


def describe(host: str, status: dict[str, str]) -> str:
    return (f"{host}: current {status['current'] or 'none'}, previous {status['previous'] or 'none'}, "
            f"{status['server']} serving {status['serving'] or 'nothing'}; releases (newest first): {status['releases']}")
