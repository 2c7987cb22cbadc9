"""Unit tests for progress lines: lab.progress.elapsed (end line, "still" lines, never after the end, errors and
Ctrl-C), each step finished on every host during a converge, and the long operations that use them."""
from __future__ import annotations

import contextlib
import functools
import re
import shlex
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from lab import lifecycle, machine_packages, progress, system
from lab.hosts import HostFacts
from lab.progress import elapsed
from lab.recipes import ConvergeReport, Recipe, RecipeResult, converge, scheduler
from lab.recipes.results import StepsDone
from lab.remote import CommandResult
from lab.testing import linux_topology
from lab.topology import Overrides


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ticker_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "lab-progress"]


def wait_until(condition, limit: float = 5.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "waited in vain"
        time.sleep(0.005)


# -- elapsed --------------------------------------------------------------------------------------


def test_the_end_line_says_how_long_the_operation_took():
    said: list[str] = []
    clock = Clock(100.0)
    with elapsed(said.append, "building the rootfs", "built the rootfs", every=None, clock=clock):
        clock.now = 163.44
    assert said == ["built the rootfs in 63.4 s"]


def test_the_body_may_name_what_it_made_once_it_knows():
    said: list[str] = []
    clock = Clock(0.0)
    with elapsed(said.append, "building the box", every=None, clock=clock) as built:
        clock.now = 151.96
        built.done = "built debian12.box (310 MiB)"
    assert said == ["built debian12.box (310 MiB) in 152.0 s"]


def test_without_an_end_text_there_is_no_end_line():
    said: list[str] = []
    with elapsed(said.append, "applying recipes", every=None):
        pass
    assert said == []


def test_a_still_line_for_each_interval_without_a_line_on_a_fake_clock():
    said: list[str] = []
    clock = Clock(100.0)
    # The ticker looks every 10 ms of real time; what it says goes by the fake clock: one line per 15 s it moves.
    with elapsed(said.append, "building the rootfs", "built the rootfs", every=0.01, clock=clock):
        time.sleep(0.05)
        assert said == []  # the fake clock has not moved: nothing to say yet
        clock.now = 115.0
        wait_until(lambda: len(said) == 1)
        clock.now = 130.0
        wait_until(lambda: len(said) == 2)
        time.sleep(0.05)  # no more while the clock stands still
        assert said == ["still building the rootfs, 15 s", "still building the rootfs, 30 s"]
        clock.now = 131.5
    assert said[-1] == "built the rootfs in 31.5 s"
    assert len(said) == 3


def test_still_lines_come_on_a_real_clock_as_plain_lines():
    said: list[str] = []
    with elapsed(said.append, "installing machine packages", "installed machine packages", every=0.02):
        time.sleep(0.2)
    still, end = said[:-1], said[-1]
    assert len(still) >= 2
    assert all(re.fullmatch(r"still installing machine packages, \d+ s", line) for line in still)
    assert re.fullmatch(r"installed machine packages in \d+\.\d s", end)
    assert not any("\r" in line for line in said)  # a CI log gets whole lines, no carriage-return animation


def test_a_line_said_through_the_operation_holds_back_the_still_lines():
    said: list[str] = []
    with elapsed(said.append, "running vagrant up (3 VMs)", every=0.5) as progress_:
        for n in range(15):  # a milestone every 50 ms, ten times as often as the interval
            progress_(f"web1: milestone {n}")
            time.sleep(0.05)
        assert not any(line.startswith("still") for line in said)
        wait_until(lambda: any(line.startswith("still") for line in said))  # then silence: a still line comes
    assert said[:15] == [f"web1: milestone {n}" for n in range(15)]
    assert re.fullmatch(r"still running vagrant up \(3 VMs\), \d+ s", said[15])


def test_what_is_under_way_is_asked_at_each_tick_and_may_say_nothing():
    said: list[str] = []
    clock = Clock(0.0)
    doing = ["waiting for db1 to answer SSH"]
    with elapsed(said.append, lambda: doing[0], every=0.01, clock=clock):
        clock.now = 15.0
        wait_until(lambda: len(said) == 1)
        doing[0] = ""
        clock.now = 30.0
        time.sleep(0.05)
    assert said == ["still waiting for db1 to answer SSH, 15 s"]


def test_no_line_after_the_end():
    said: list[str] = []
    with elapsed(said.append, "booting", "booted", every=0.005) as progress_:
        time.sleep(0.05)
    assert said[-1].startswith("booted in ")
    assert not ticker_threads()  # joined before the with statement ended
    count = len(said)
    progress_("a line from a thread the operation left running")
    time.sleep(0.05)
    assert len(said) == count


def test_an_exception_goes_on_unchanged_without_an_end_line():
    said: list[str] = []
    with pytest.raises(ValueError, match="debootstrap failed"):
        with elapsed(said.append, "building the rootfs", "built the rootfs", every=0.005):
            time.sleep(0.03)
            raise ValueError("debootstrap failed")
    assert not ticker_threads()
    assert all(line.startswith("still building the rootfs") for line in said)
    count = len(said)
    time.sleep(0.03)
    assert len(said) == count


def test_ctrl_c_interrupts_at_once_and_stops_the_ticker():
    said: list[str] = []
    # What the terminal's Ctrl-C does: SIGINT to the main thread, which is asleep in the body.
    timer = threading.Timer(0.1, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            with elapsed(said.append, "building the rootfs", "built the rootfs", every=0.01):
                time.sleep(30)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 5
    assert not ticker_threads()
    assert not any(line.startswith("built") for line in said)
    count = len(said)
    time.sleep(0.05)
    assert len(said) == count


def test_the_default_interval_is_at_most_15_s():
    assert 0 < progress.EVERY <= 15


# -- each step finished on every host ---------------------------------------------------------------


def result(host: str, step: int, status: str = "changed") -> RecipeResult:
    return RecipeResult(host, f"s{step}.r", step, status)


def test_a_step_is_done_when_its_last_result_arrives():
    steps = StepsDone({1: 2, 2: 1})
    assert steps.add(result("web1", 1), 1.0) == []
    assert steps.add(result("db1", 1, "ok"), 2.5) == [
        "step 1 done on every host: 2 recipes, 1 changed; 2.5 s since the recipes began"]
    assert steps.add(result("db1", 2), 3.0) == ["step 2 done on every host: 1 recipe, 1 changed; 3.0 s since the recipes began"]


def test_a_later_step_finished_first_waits_for_the_earlier_one():
    steps = StepsDone({1: 1, 2: 2, 3: 1})
    assert steps.add(result("web1", 1), 1.0) == [
        "step 1 done on every host: 1 recipe, 1 changed; 1.0 s since the recipes began"]
    assert steps.add(result("web1", 2), 2.0) == []
    assert steps.add(result("web1", 3), 3.0) == []  # web1 is through step 3, db1 still in step 2
    assert steps.add(result("db1", 2, "ok"), 4.0) == [
        "step 2 done on every host: 2 recipes, 1 changed; 4.0 s since the recipes began",
        "step 3 done on every host: 1 recipe, 1 changed; 4.0 s since the recipes began",
    ]


def test_a_step_with_failures_says_so():
    steps = StepsDone({2: 3})
    steps.add(result("db1", 2, "failed"), 1.0)
    steps.add(result("web1", 2, "skipped"), 1.0)
    assert steps.add(result("web2", 2, "changed"), 1.5) == [
        "step 2 finished on every host: 1 failed, 1 skipped of 3 recipes; 1.5 s since the recipes began"]


class Host:
    """A host that runs `sleep N` and `put PATH`, and remembers what was put."""

    def __init__(self, name: str, files: dict[str, str]) -> None:
        self.name = name
        self.files = files

    def run(self, command: str, user: str | None = None) -> CommandResult:
        verb, *args = shlex.split(command)
        if verb == "sleep":
            time.sleep(float(args[0]))
        elif verb == "put":
            if args[0] in self.files:
                return CommandResult(command, 0, "", "")
            self.files[args[0]] = "x"
        return CommandResult(command, 0, "", "")

    def put(self, data: bytes, remote_path: str) -> None:
        self.files[remote_path] = data.decode()

    def get(self, remote_path: str) -> bytes:
        return self.files[remote_path].encode()

    def close(self) -> None:
        pass


def put(path: str, seconds: float = 0.0):
    def func(t) -> None:
        if seconds:
            t.run("sleep %s", seconds)
        if path not in t.remote.files:
            t.run("put %s", path)
            t.changed(f"wrote {path}")

    return func


# db1 is slow in step 2, so web1 and web2 finish step 3 before db1 finishes step 2.
STEPS = [
    Recipe("s1.motd", 1, ("lb", "web", "db"), put("/etc/motd")),
    Recipe("s2.database", 2, ("db",), put("/db", seconds=0.3)),
    Recipe("s2.venv", 2, ("web",), put("/venv")),
    Recipe("s3.app", 3, ("web",), put("/app")),
]


def converged(recipes, files=None, **kwargs):
    files = files if files is not None else {}
    topology = linux_topology(overrides=Overrides(web=2))
    lines: list[str] = []
    seen: list[str] = []

    def on_result(r: RecipeResult) -> None:
        seen.append(f"{r.status} {r.host} {r.recipe}")
        lines.append(f"  {r.status} {r.host} {r.recipe}")

    report = converge(topology, recipes, lambda name: Host(name, files.setdefault(name, {})),
                      HostFacts(proxy_url=None), {}, on_result, lines.append, **kwargs)
    return report, lines


def test_converge_says_each_step_once_done_on_every_host_in_order():
    report, lines = converged(STEPS)
    step_lines = [line for line in lines if line.startswith("step ")]
    assert [line.split(" done")[0] for line in step_lines] == ["step 1", "step 2", "step 3"]
    assert step_lines[0].startswith("step 1 done on every host: 4 recipes, 4 changed; ")
    assert step_lines[1].startswith("step 2 done on every host: 3 recipes, 3 changed; ")
    assert step_lines[2].startswith("step 3 done on every host: 2 recipes, 2 changed; ")
    assert all(re.search(r"; \d+\.\d s since the recipes began$", line) for line in step_lines)
    seconds = [float(re.search(r"; ([\d.]+) s since", line).group(1)) for line in step_lines]
    assert seconds[1] >= 0.3 and seconds == sorted(seconds)
    # Each step's line comes after every result of that step (web hosts finished step 3 before db1's step 2).
    for step, line in zip((1, 2, 3), step_lines):
        where = lines.index(line)
        assert all(lines.index(f"  changed {r.host} {r.recipe}") < where for r in report.results if r.step == step)
    assert lines.index("  changed web1 s3.app") < lines.index(step_lines[1])


def test_a_converge_of_a_converged_lab_says_its_steps_too():
    files: dict = {}
    converged(STEPS, files)
    _, lines = converged(STEPS, files)
    assert [line for line in lines if line.startswith("step ")][0].startswith(
        "step 1 done on every host: 4 recipes, 0 changed; ")


def test_a_failed_step_is_said_with_its_failures():
    def broken(t) -> None:
        raise RuntimeError("postgresql did not start")

    recipes = [Recipe("s1.motd", 1, ("lb", "web", "db"), put("/etc/motd")),
               Recipe("s2.database", 2, ("db",), broken),
               Recipe("s2.schema", 2, ("web",), put("/schema"), requires=("s2.database",), first_only=True)]
    _, lines = converged(recipes)
    assert [line.split(";")[0] for line in lines if line.startswith("step ")] == [
        "step 1 done on every host: 4 recipes, 4 changed",
        "step 2 finished on every host: 1 failed, 1 skipped of 2 recipes",
    ]


def test_a_quiet_converge_says_which_recipes_are_under_way(monkeypatch):
    monkeypatch.setattr(scheduler, "elapsed", functools.partial(elapsed, every=0.02))
    _, lines = converged(STEPS)
    still = [line for line in lines if line.startswith("still ")]
    assert still, lines
    assert any(re.fullmatch(r"still applying recipes \(db1: step 2 database for \d+ s\), \d+ s", line) for line in still)
    assert not ticker_threads()


def test_lab_up_hands_its_say_to_the_converge(tmp_path, monkeypatch):
    said: list[str] = []
    handed: list = []

    class Provider:
        def preflight(self, topology, labdir, say) -> None:
            pass

        def up(self, topology, labdir, state, say, offline=False) -> list:
            return []

        def facts(self, topology) -> HostFacts:
            return HostFacts(proxy_url=None)

    def fake_converge(topology, recipes, connect, facts, secrets, on_result, say):
        handed.append(say)
        say("step 1 done on every host: 3 recipes, 3 changed; 1.0 s since the recipes began")
        return ConvergeReport([], 1.0)

    monkeypatch.setattr(lifecycle, "get_provider", lambda name: Provider())
    monkeypatch.setattr(lifecycle.recipes_module, "load_recipes", lambda max_step=None: [])
    monkeypatch.setattr(lifecycle.recipes_module, "converge", fake_converge)
    monkeypatch.setattr(lifecycle, "lab_authority", lambda project, topology: SimpleNamespace(as_secrets=lambda: {}))
    project = lifecycle.Project.here(tmp_path, environ={})
    lifecycle.up(project, Overrides(), said.append, lambda r: None)
    assert handed == [said.append]
    assert said == ["step 1 done on every host: 3 recipes, 3 changed; 1.0 s since the recipes began"]


# -- the long operations -------------------------------------------------------------------------------------------


def fake_apt(monkeypatch, works: bool) -> None:
    """No machine package is there until the (fake) apt-get installs them all, or refuses to."""
    installed: list[bool] = []
    monkeypatch.setattr(system.shutil, "which", lambda program: "/usr/bin/apt-get" if program == "apt-get" else None)
    monkeypatch.setattr(system, "_have", lambda proof: bool(installed))
    monkeypatch.setattr(system, "_services_held_back", contextlib.nullcontext)

    def apt(missing, env):
        if works:
            installed.append(True)
            return SimpleNamespace(returncode=0, stdout="", stderr="")
        return SimpleNamespace(returncode=100, stdout="", stderr="E: Unable to locate package squid\n")

    monkeypatch.setattr(system, "_apt_install", apt)


def test_machine_packages_say_when_they_are_installed(monkeypatch):
    fake_apt(monkeypatch, works=True)
    said: list[str] = []
    machine_packages.ensure_feature("local", said.append)
    assert said[0].startswith("installing machine packages: ") and "debootstrap" in said[0]
    assert re.fullmatch(r"installed machine packages in \d+\.\d s", said[-1])
    assert len(said) == 2


def test_machine_packages_that_fail_say_no_end_line(monkeypatch):
    fake_apt(monkeypatch, works=False)
    said: list[str] = []
    with pytest.raises(system.MissingDependency, match="Unable to locate package squid"):
        machine_packages.ensure_feature("local", said.append)
    assert len(said) == 1 and said[0].startswith("installing machine packages: ")
    assert not ticker_threads()


def test_the_rootfs_build_says_when_it_is_built(tmp_path, monkeypatch):
    from lab.providers.local import rootfs

    monkeypatch.setattr(rootfs, "cache_root", lambda: tmp_path)
    monkeypatch.setattr(rootfs.debian_rootfs, "build", lambda target, *args, **kwargs: Path(target).mkdir())
    said: list[str] = []
    built = rootfs.ensure_rootfs(said.append)
    assert (built / ".lab-complete").exists()
    assert said[0].startswith("building the Debian bookworm rootfs once (about a minute")
    assert re.fullmatch(r"built the Debian bookworm rootfs in \d+\.\d s", said[-1])
    said.clear()
    rootfs.ensure_rootfs(said.append)  # cached: nothing to say
    assert said == []


def test_local_hosts_say_when_each_one_answers_ssh(tmp_path, monkeypatch):
    from lab.providers import local
    from lab.providers.local import machines

    monkeypatch.setattr(local, "data_root", lambda: tmp_path / "data")
    monkeypatch.setattr(local, "cache_root", lambda: tmp_path / "cache")
    monkeypatch.setattr(local, "ensure_rootfs", lambda say: tmp_path / "rootfs")
    monkeypatch.setattr(local.network, "ensure_bridge", lambda *args: None)
    monkeypatch.setattr(local.network, "ensure_host_link", lambda *args: None)
    monkeypatch.setattr(local.proxy, "ensure_proxy", lambda *args, **kwargs: None)
    monkeypatch.setattr(machines, "ensure_disk", lambda spec, rootfs: None)
    monkeypatch.setattr(machines, "ensure_identity", lambda spec, key: "ssh-ed25519 AAAA")
    monkeypatch.setattr(machines, "running_pid", lambda spec: None)
    monkeypatch.setattr(machines, "leftover_pids", lambda spec: [])
    monkeypatch.setattr(machines, "boot", lambda spec, binds: 4242)
    # db1 takes longest to answer: the "still" line names it alone once the others are up.
    monkeypatch.setattr(machines, "wait_for_ssh", lambda spec, pid: time.sleep(0.4 if spec.name == "db1" else 0.02))
    monkeypatch.setattr(local, "elapsed", functools.partial(elapsed, every=0.1))
    labdir = SimpleNamespace(path=tmp_path / ".lab", logs=tmp_path / ".lab/logs", private_key=tmp_path / "key",
                             write=lambda state: None, ensure_key=lambda: "ssh-ed25519 BBBB")
    said: list[str] = []
    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:
            said.append(line)

    endpoints = local.LocalProvider().up(linux_topology(), labdir, {}, say)
    assert [e.host for e in endpoints] == ["lb1", "web1", "db1"]
    for host in ("lb1", "web1", "db1"):
        booted = [line for line in said if line.startswith(f"{host} booted")]
        assert len(booted) == 1 and re.fullmatch(rf"{host} booted \(SSH answers\) in \d+\.\d s", booted[0])
        assert said.index(f"booting {host}") < said.index(booted[0])
    assert any(re.fullmatch(r"still waiting for db1 to answer SSH, \d+ s", line) for line in said), said
    assert said.index(next(line for line in said if line.startswith("still"))) < said.index(
        next(line for line in said if line.startswith("db1 booted")))
    assert not ticker_threads()


def fake_box_build(tmp_path, monkeypatch, fail: bool = False):
    """build_box with every tool it runs faked: the rootfs a folder, the disk and the box small files."""
    from lab.providers.vagrant import box

    monkeypatch.setattr(box, "require_root", lambda what: None)
    monkeypatch.setattr(box, "ensure_feature", lambda feature, say: None)
    monkeypatch.setattr(box, "machine_ca_certificates", lambda: [])
    monkeypatch.setattr(box.debian_rootfs, "build", lambda target, *args, **kwargs: Path(target).mkdir())
    monkeypatch.setattr(box, "_bootable", lambda root: None)

    def in_root(root, link):
        (root / link).write_text(link)
        return root / link

    def make_disk(root, work):
        if fail:
            raise box.ProviderError("box: mkfs.ext4 failed")
        (work / "disk.raw").write_bytes(b"disk")
        return work / "disk.raw"

    def pack(disk, work):
        (work / box.BOX_FILE).write_bytes(b"\0" * (3 << 20))
        return work / box.BOX_FILE

    monkeypatch.setattr(box, "_in_root", in_root)
    monkeypatch.setattr(box, "_make_disk", make_disk)
    monkeypatch.setattr(box, "_pack", pack)
    monkeypatch.setattr(box, "_mounts_under", lambda folder: [])
    return box


def test_the_box_build_says_when_it_is_built(tmp_path, monkeypatch):
    box = fake_box_build(tmp_path, monkeypatch)
    said: list[str] = []
    built = box.build_box(said.append, cache_dir=tmp_path)
    assert said[0].startswith("building the Debian bookworm Vagrant box (about 2 minutes")
    assert re.fullmatch(rf"built {re.escape(str(built))} \(3 MiB\) in \d+\.\d s", said[-1])
    assert not list((tmp_path / "boxes").glob(".build-*"))  # the work folder went before the end line


def test_a_failed_box_build_says_no_end_line(tmp_path, monkeypatch):
    box = fake_box_build(tmp_path, monkeypatch, fail=True)
    said: list[str] = []
    with pytest.raises(box.ProviderError, match="mkfs.ext4 failed"):
        box.build_box(said.append, cache_dir=tmp_path)
    assert not any(line.startswith("built") for line in said)
    assert not list((tmp_path / "boxes").glob(".build-*"))
    assert not ticker_threads()
