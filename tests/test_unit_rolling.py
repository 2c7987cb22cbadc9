"""Unit tests for rolling restarts: one web host at a time out of the balancer's pool, on make-believe hosts."""

from __future__ import annotations

import threading
import time

import pytest

from lab.providers.base import HostFacts
from lab.recipes import Recipe, RecipeError, Target, converge
from lab.remote import CommandResult
from lab.topology import Overrides, resolve
from provision.step5_balancer import recipes as step5


class FakeRemote:
    """A host that answers every command with success and nothing on stdout."""

    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, command: str, user: str | None = None) -> CommandResult:
        return CommandResult(command, 0, "", "")

    def close(self) -> None:
        pass


class FakePool:
    """A balancer that serves every host not marked down; it records each pool it was given and each window."""

    def __init__(self) -> None:
        self.running = True
        self.down: frozenset[str] = frozenset()
        self.applied: list[frozenset[str]] = []
        self.events: list[tuple[str, str, bool]] = []
        self.lock = threading.Lock()

    def serving(self, t: Target) -> set[str] | None:
        if not self.running:
            return None
        return {h.name for h in t.topology.tier("web")} - self.down

    def apply(self, t: Target, down: frozenset[str]) -> None:
        self.down = down
        self.applied.append(down)

    def log(self, *event) -> None:
        with self.lock:
            self.events.append(event)


BALANCER_POOL = FakePool()  # converge finds it here, as it finds step 5's NginxPool in provision/step5_balancer


def restart_app(t: Target) -> None:
    with t.rolling("restarting app") as drained:
        BALANCER_POOL.log("in", t.host.name, drained)
        time.sleep(0.05)  # long enough for another host's window to overlap, if windows could
        if t.host.name in FAILING:
            raise RecipeError("the app did not answer")
        BALANCER_POOL.log("out", t.host.name, drained)


FAILING: set[str] = set()


@pytest.fixture(autouse=True)
def fresh_pool():
    BALANCER_POOL.__init__()
    FAILING.clear()
    yield


def run(web: int, recipes: list[Recipe] | None = None):
    topology = resolve({}, {}, Overrides(web=web), platform="linux")
    recipes = recipes or [Recipe("step3_appserver.restart_app", 3, ("web",), restart_app)]
    return converge(topology, recipes, FakeRemote, HostFacts(proxy_url=None), {})


def windows(events) -> list[tuple[str, str]]:
    return [(kind, host) for kind, host, _ in events]


def test_two_hosts_restart_one_at_a_time_each_out_of_the_pool():
    report = run(web=3)
    events = windows(BALANCER_POOL.events)
    assert len(events) == 6
    for index in range(0, 6, 2):  # every window closes before the next one opens
        assert events[index][0] == "in" and events[index + 1] == ("out", events[index][1])
    assert all(drained for _, _, drained in BALANCER_POOL.events)
    order = [host for kind, host in events if kind == "in"]
    assert BALANCER_POOL.applied == [d for host in order for d in (frozenset({host}), frozenset())]
    assert BALANCER_POOL.down == frozenset()  # everyone back in the pool
    assert report.count("failed") == 0
    for result in report.results:
        assert len(result.changes) == 1 and "out of the balancer's pool for restarting app, back after" in result.changes[0]


def test_the_only_host_restarts_in_place():
    run(web=1)
    assert BALANCER_POOL.events == [("in", "web1", False), ("out", "web1", False)]
    assert BALANCER_POOL.applied == []


def test_no_balancer_yet_means_nothing_to_drain():
    BALANCER_POOL.running = False  # a lab's first `lab up`: nginx comes later
    run(web=2)
    assert [drained for _, _, drained in BALANCER_POOL.events] == [False] * 4
    assert BALANCER_POOL.applied == []


def test_a_host_that_fails_its_restart_stays_out_and_the_last_one_restarts_in_place():
    FAILING.add("web1")
    report = run(web=2)
    failed = [r for r in report.results if r.status == "failed"]
    assert [r.host for r in failed] == ["web1"]
    assert BALANCER_POOL.down == frozenset({"web1"})  # sent no request again until it answers
    web2 = [drained for kind, host, drained in BALANCER_POOL.events if host == "web2"]
    web1_first = windows(BALANCER_POOL.events)[0][1] == "web1"
    # After web1 failed it is out: draining web2 too would leave nothing to serve, so web2 restarts in place.
    assert web2 == ([False, False] if web1_first else [True, True])


def test_a_recipe_after_another_runs_once_it_finished_everywhere_even_failed():
    seen: list[str] = []

    def balancer(t: Target) -> None:
        seen.append(",".join(sorted(e[1] for e in BALANCER_POOL.events if e[0] == "in")))

    FAILING.add("web2")
    report = run(web=2, recipes=[
        Recipe("step3_appserver.restart_app", 3, ("web",), restart_app),
        Recipe("step5_balancer.nginx", 5, ("lb",), balancer, after=("step3_appserver.restart_app",)),
    ])
    assert seen == ["web1,web2"]
    assert {(r.host, r.status) for r in report.results if r.recipe == "step5_balancer.nginx"} == {("lb1", "ok")}


# -- step 5: which servers the upstream lists ---------------------------------------------------------------

TOPOLOGY = resolve({}, {}, Overrides(web=3), platform="linux")
WEBS = step5.upstream_hosts(TOPOLOGY)


def test_upstream_lists_only_hosts_that_answer_and_marks_the_drained_down():
    servers = step5.upstream_servers(WEBS, {"web1", "web2"}, frozenset({"web2"}))
    assert [(s["name"], s["parameters"]) for s in servers] == [("web1", step5.SERVER_PARAMETERS), ("web2", "down")]
    assert servers[0]["address"] == f"{WEBS[0].ip}:8000"


def test_upstream_lists_every_host_when_none_answers():
    assert [s["name"] for s in step5.upstream_servers(WEBS, set(), frozenset())] == ["web1", "web2", "web3"]


class ProbingLb(FakeRemote):
    def __init__(self, answers: dict[str, str]) -> None:
        super().__init__("lb1")
        self.answers = answers
        self.commands: list[str] = []

    def run(self, command: str, user: str | None = None) -> CommandResult:
        self.commands.append(command)
        lines = "".join(f"{ip} {self.answers.get(ip, '')}\n" for ip in command.split()[-len(WEBS):])
        return CommandResult(command, 0, lines, "")


def test_healthy_reads_the_status_line_of_each_probe():
    lb = ProbingLb({WEBS[0].ip: "HTTP/1.1 200 OK\r", WEBS[1].ip: "HTTP/1.1 503 Service Unavailable\r"})
    target = Target(lb, TOPOLOGY.host("lb1"), TOPOLOGY, HostFacts(proxy_url=None), {}, None, FakeRemote)  # type: ignore[arg-type]
    assert step5.healthy(target, WEBS) == {"web1"}
    assert "/health/" in lb.commands[0] and all(h.ip in lb.commands[0] for h in WEBS)
