"""Unit tests for `lab deploy`/`lab rollback`'s rolling switch, on make-believe web hosts behind a make-believe balancer."""

from __future__ import annotations

import contextlib
import re
import types

import pytest

from lab import deploy
from lab.errors import DeployFailed, NothingToRollBack, exit_code_for
from lab.lifecycle import Project
from lab.recipes import PROJECT_ROOT, Target
from lab.recipes.scheduler import template_environment
from lab.recipes.target import Rollout
from lab.remote import CommandResult
from lab.testing import linux_topology, one_error_line, run_main
from lab.topology import Overrides

OLD, NEW = "/srv/bank/releases/aaaaaaaaaaaa", "/srv/bank/releases/bbbbbbbbbbbb"


class WebHost:
    """A web host on paper: `current` and `previous` links, an app server whose health follows the release it runs."""

    def __init__(self, name: str, pool: "Pool", broken: set[str]) -> None:
        self.name, self.pool, self.broken = name, pool, broken
        self.links = {"current": OLD, "previous": ""}
        self.serving = OLD  # the release the app server's processes run
        self.log: list[str] = []

    def run(self, command: str, user: str | None = None) -> CommandResult:
        ok = CommandResult(command, 0, "", "")
        if command.startswith("readlink /srv/bank/"):
            link = self.links[command.split("/")[-1]]
            return CommandResult(command, 0 if link else 1, link + "\n" if link else "", "")
        switched = re.match(r"ln -sfn (\S+) /srv/bank/(current|previous)\.new", command)
        if switched:
            self.links[switched.group(2)] = switched.group(1)
            if switched.group(2) == "current":
                self.pool.events.append((self.name, "switched", switched.group(1)[-12:], self.name in self.pool.down))
            return ok
        if command.startswith("systemctl restart") or command.startswith("systemctl reload"):
            self.serving = self.links["current"]
            self.pool.events.append((self.name, command.split()[1], self.serving[-12:], self.name in self.pool.down))
            return ok
        if command.startswith("printf"):
            self.log.append(re.search(r'\)" (\S+) (\S+) >> /srv/bank/deploys.log', command).group(1))
            return ok
        if "/health/" in command or "inspect ping" in command:  # the warm-up's health check, a worker's ping
            healthy = self.serving.rsplit("/", 1)[-1] not in self.broken
            return CommandResult(command, 0 if healthy else 1, "", "" if healthy else "HTTP Error 500")
        return ok  # systemctl is-enabled/is-active, the wait for the current release

    def put(self, data, path):
        pass

    def close(self):
        pass


class Pool:
    """The balancer: serves every web host not marked down; records each host's time out of the pool."""

    def __init__(self) -> None:
        self.down: frozenset[str] = frozenset()
        self.events: list[tuple] = []

    def serving(self, t: Target) -> set[str]:
        return {h.name for h in t.topology.tier("web")} - self.down

    def apply(self, t: Target, down: frozenset[str]) -> None:
        self.down = down
        self.events.append(("pool", sorted(down)))


def fake_lab(web: int = 2, broken: set[str] = frozenset(), q: int = 0) -> tuple[deploy.WebTargets, Pool, dict[str, WebHost]]:
    topology = linux_topology(overrides=Overrides(web=web, counts={"q": q}))
    pool = Pool()
    rollout = Rollout(pool)
    hosts = {h.name: WebHost(h.name, pool, set(broken)) for h in (*topology.tier("web"), *topology.tier("q"))}
    lab = deploy.WebTargets.__new__(deploy.WebTargets)  # its __init__ connects to a running lab

    def target(host):
        return Target(hosts[host.name], host, topology, None, {}, template_environment(), lambda n: hosts[n], rollout)

    lab.topology = topology
    lab.targets = {h.name: target(h) for h in topology.tier("web")}
    lab.workers = {h.name: target(h) for h in topology.tier("q")}
    return lab, pool, hosts


def test_the_q_hosts_workers_switch_last_one_at_a_time_and_a_rollback_takes_them_back(monkeypatch):
    monkeypatch.setattr(deploy, "wait_for_ping", lambda t: t.run("celery inspect ping"))  # answered at once
    lab, pool, hosts = fake_lab(web=2, q=2)
    report = deploy._roll(lab, NEW, lambda m: None, 5, "deploy")
    deploy._switch_workers(lab, NEW, lambda m: None, "deploy", report)
    assert list(report.switched) == ["web1", "web2", "q1", "q2"]
    assert [(e[0], e[1]) for e in pool.events if e[0].startswith("q")] == [
        ("q1", "switched"), ("q1", "restart"), ("q2", "switched"), ("q2", "restart")]
    assert all(h.serving == NEW and h.links["previous"] == OLD and h.log == ["bbbbbbbbbbbb"] for h in hosts.values())
    back = deploy._roll(lab, OLD, lambda m: None, 5, "rollback")
    deploy._switch_workers(lab, OLD, lambda m: None, "rollback", back)
    assert all(h.serving == OLD for h in hosts.values()) and list(back.switched) == ["web1", "web2", "q1", "q2"]


def test_a_worker_that_does_not_answer_on_the_release_goes_back_and_the_deploy_stops(monkeypatch):
    monkeypatch.setattr(deploy, "wait_for_ping", lambda t: t.run("celery inspect ping"))  # a failed ping raises
    lab, pool, hosts = fake_lab(web=1, q=2, broken={"bbbbbbbbbbbb"})
    report = deploy.DeployReport("bbbbbbbbbbbb", "aaaaaaaaaaaa")
    with pytest.raises(DeployFailed, match="q1's worker failed on release bbbbbbbbbbbb .* it runs aaaaaaaaaaaa again"):
        deploy._switch_workers(lab, NEW, lambda m: None, "deploy", report)
    assert hosts["q1"].links["current"] == hosts["q1"].serving == OLD and hosts["q1"].log[-1] == "aaaaaaaaaaaa"
    assert hosts["q2"].links["current"] == OLD and hosts["q2"].log == []  # never touched


def test_a_deploy_switches_one_drained_host_at_a_time(capsys):
    lab, pool, hosts = fake_lab(web=3)
    report = deploy._roll(lab, NEW, print, 5, "deploy")
    assert report.release == "bbbbbbbbbbbb" and report.previous == "aaaaaaaaaaaa"
    assert list(report.switched) == ["web1", "web2", "web3"]
    switches = [e for e in pool.events if e[1] in ("switched", "restart")]
    # each host switched and restarted while out of the pool (drained), never two out at once
    assert all(drained for *_, drained in switches)
    assert [e for e in pool.events if e[0] == "pool"] == [("pool", ["web1"]), ("pool", []), ("pool", ["web2"]),
                                                         ("pool", []), ("pool", ["web3"]), ("pool", [])]
    assert all(h.serving == NEW and h.links["previous"] == OLD for h in hosts.values())
    assert all(h.log == ["bbbbbbbbbbbb"] for h in hosts.values())


def test_a_host_that_fails_its_health_check_goes_back_and_the_deploy_stops():
    lab, pool, hosts = fake_lab(web=3, broken={"bbbbbbbbbbbb"})
    hosts["web1"].links["previous"] = "/srv/bank/releases/000000000000"
    with pytest.raises(DeployFailed, match="web1 failed its health check on release bbbbbbbbbbbb .* serves aaaaaaaaaaaa "
                                           "again, hosts switched before it: none") as error:
        deploy._roll(lab, NEW, lambda m: None, 5, "deploy")
    assert exit_code_for(error.value) == 72
    assert hosts["web1"].serving == OLD and hosts["web1"].links["current"] == OLD  # back on the old release
    assert hosts["web1"].links["previous"] == "/srv/bank/releases/000000000000"  # a rollback is not to the failed one
    assert pool.down == frozenset()  # and back in the pool, healthy
    assert hosts["web2"].serving == OLD and hosts["web2"].links["current"] == OLD  # never touched
    assert hosts["web3"].links["current"] == OLD


def test_a_rollback_rolls_the_same_way_to_the_release_before():
    lab, pool, hosts = fake_lab(web=2)
    deploy._roll(lab, NEW, lambda m: None, 5, "deploy")
    report = deploy._roll(lab, OLD, lambda m: None, 5, "rollback")
    assert report.release == "aaaaaaaaaaaa" and list(report.switched) == ["web1", "web2"]
    assert all(h.serving == OLD and h.links["previous"] == NEW for h in hosts.values())


def test_hosts_already_on_the_release_are_left_alone():
    lab, pool, hosts = fake_lab(web=2)
    hosts["web1"].links["current"] = hosts["web1"].serving = NEW
    report = deploy._roll(lab, NEW, lambda m: None, 5, "deploy")
    assert report.unchanged == ["web1"] and list(report.switched) == ["web2"]


def test_with_one_web_host_it_reloads_in_place():
    lab, pool, hosts = fake_lab(web=1)
    deploy._roll(lab, NEW, lambda m: None, 5, "deploy")
    assert [e[1] for e in pool.events if e[0] == "web1"] == ["switched", "reload"]  # nothing to drain to
    assert hosts["web1"].serving == NEW


def test_a_hosts_status_is_read_from_one_command():
    output = ("current /srv/bank/releases/bbbbbbbbbbbb\nprevious /srv/bank/releases/aaaaaaaaaaaa\n"
              "releases bbbbbbbbbbbb aaaaaaaaaaaa\nserver gunicorn\nserving /srv/bank/releases/bbbbbbbbbbbb\n")
    status = deploy.host_status(lambda command: output)
    assert status == {"current": "bbbbbbbbbbbb", "previous": "aaaaaaaaaaaa", "releases": "bbbbbbbbbbbb aaaaaaaaaaaa",
                      "server": "gunicorn", "serving": "bbbbbbbbbbbb"}
    assert deploy.describe("web1", status).startswith("web1: current bbbbbbbbbbbb, previous aaaaaaaaaaaa, gunicorn serving")


@pytest.mark.parametrize("verb", ["deploy", "rollback"])
def test_with_no_lab_up_it_is_one_line_and_exit_7(capfd, tmp_path, monkeypatch, verb):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main([verb], capfd)
    assert code == 7
    assert "no lab in" in one_error_line(err)
    assert not (tmp_path / ".lab").exists()


def test_the_fabfile_is_thin_over_the_library():
    """fabfile.py's tasks call lab.deploy (the same code as `lab deploy`), and `fab` finds the lab's ssh_config."""
    fabfile = (PROJECT_ROOT / "fabfile.py").read_text()
    assert "deploys.deploy(Project.here()" in fabfile and "deploys.rollback(Project.here()" in fabfile
    assert "ssh_config_path: .lab/ssh_config" in (PROJECT_ROOT / "fabric.yaml").read_text()
    assert Project  # the fabfile's project is the folder `fab` runs in, as for `lab`


def test_a_rollback_with_no_earlier_release_is_its_own_exit_code_and_changes_nothing(monkeypatch):
    """One release only (`previous` absent): exit 78, not 72's "a host failed its health check", and no host touched."""
    lab, pool, hosts = fake_lab(web=2)
    lab.close = lambda: None
    monkeypatch.setattr(deploy, "WebTargets", lambda project: lab)
    project = types.SimpleNamespace(labdir=types.SimpleNamespace(locked=contextlib.nullcontext))
    with pytest.raises(NothingToRollBack) as refused:
        deploy.rollback(project, lambda m: None)
    assert exit_code_for(refused.value) == 78 and "nothing to roll back to: web1" in str(refused.value)
    assert pool.events == [] and all(h.links == {"current": OLD, "previous": ""} for h in hosts.values())
