"""Unit tests for rolling restarts: one web host at a time out of the balancer's pool, on make-believe hosts."""

from __future__ import annotations

import hashlib
import shlex
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


class FakeLb(FakeRemote):
    """lb1 with nginx running: files kept in a dict, every web host answering /health/ unless listed as sick."""

    def __init__(self) -> None:
        super().__init__("lb1")
        self.files: dict[str, bytes] = {}
        self.sick: set[str] = set()
        self.reloads = 0
        self.waited_for: list[str] = []

    def put(self, data: bytes, path: str) -> None:
        self.files[path] = data

    def run(self, command: str, user: str | None = None) -> CommandResult:
        def done(out: str = "", code: int = 0) -> CommandResult:
            return CommandResult(command, code, out, "")

        if command.startswith("HEALTH=/health/ bash -c "):
            return done("".join(f"{h.ip} HTTP/1.1 {503 if h.name in self.sick else 200} OK\r\n" for h in WEBS))
        if command.startswith("stat -c"):  # Target.file: mode, owner and checksum of what is there
            data = self.files.get(shlex.split(command)[3])
            return done(f"644 root root\n{hashlib.sha256(data).hexdigest()}\n") if data else done(code=1)
        if " && mv -f " in command:
            tmp, path = command.split(" && mv -f ")[1].split()
            self.files[path] = self.files.pop(tmp)
            return done()
        if command.startswith("grep -E '^\\s*server "):
            text = self.files[step5.SITE].decode()
            return done("".join(line + "\n" for line in text.splitlines() if line.lstrip().startswith("server ") and "  # " in line))
        if command == "systemctl reload nginx":
            self.reloads += 1
            return done()
        if command.startswith("pgrep -d ' ' -f '^nginx: worker process'"):
            return done(f"{100 + self.reloads} {200 + self.reloads}\n")
        if command.startswith("timeout 60 sh -c "):
            self.waited_for.append(command)
            return done()
        if command.startswith("systemctl is-active --quiet nginx && test -e") or command == "nginx -t":
            return done()
        raise AssertionError(f"unexpected command on lb1: {command}")


def web_target(lb: FakeLb, env) -> Target:
    return Target(FakeRemote("web2"), TOPOLOGY.host("web2"), TOPOLOGY, HostFacts(proxy_url=None), {}, env,
                  lambda name: lb)


@pytest.fixture
def env():
    import jinja2

    from lab.recipes import PROVISION_DIR
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(PROVISION_DIR)), undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)


def test_nginx_pool_drains_with_down_waits_for_old_workers_and_rejoins(env):
    lb, pool = FakeLb(), step5.NginxPool()
    lb.sick.add("web3")  # not ready: never listed, drained or not
    t = web_target(lb, env)
    pool.apply(t, frozenset())
    assert pool.serving(t) == {"web1", "web2"}
    pool.apply(t, frozenset({"web2"}))
    site = lb.files[step5.SITE].decode()
    assert f"server {WEBS[1].ip}:8000 down;  # web2" in site and WEBS[2].ip not in site
    assert pool.serving(t) == {"web1"}
    assert "for p in 101 201; do while kill -0 $p" in lb.waited_for[-1]  # the workers from before this reload
    pool.apply(t, frozenset())
    assert pool.serving(t) == {"web1", "web2"} and lb.reloads == 3
    pool.apply(t, frozenset())
    assert lb.reloads == 3  # nothing changed, no reload
