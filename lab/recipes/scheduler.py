"""Runs recipes over a lab: one thread per host, each host's recipes in step order, waiting only where a recipe
requires (or comes after) another one on other hosts."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import jinja2

from lab.hosts import HostFacts
from lab.progress import elapsed
from lab.recipes.discovery import PROVISION_DIR, Recipe, balancer_pool
from lab.recipes.results import ConvergeReport, RecipeResult, StepsDone
from lab.recipes.target import Rollout, Target
from lab.remote import RemoteHost
from lab.topology import Host, Topology


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


def template_environment() -> jinja2.Environment:
    """The provision/ templates as recipes render them (also for `lab deploy`'s Targets, outside a converge)."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(PROVISION_DIR)), undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
    )


def converge(
    topology: Topology,
    recipes: list[Recipe],
    connect: Callable[[str], RemoteHost],
    facts: HostFacts,
    secrets: dict[str, str],
    on_result: Callable[[RecipeResult], None] = lambda r: None,
    say: Callable[[str], None] = lambda line: None,
) -> ConvergeReport:
    """Apply recipes to every host: one thread per host, in order, waiting only where a recipe requires another.

    on_result hears each recipe's result on each host as it comes; say hears a line as each step is finished on
    every host, and a "still" line naming the recipes under way when nothing was said for a while.
    """
    started = time.monotonic()
    templates = template_environment()
    needed = {r.name: {h.name for h in topology.hosts if r.applies_to(h, topology)} for r in recipes}
    progress = _Progress(needed)
    rollout = Rollout(balancer_pool(recipes))
    results: list[RecipeResult] = []
    lock = threading.Lock()
    expected: dict[int, int] = {}
    for r in recipes:
        expected[r.step] = expected.get(r.step, 0) + len(needed[r.name])
    steps = StepsDone(expected)
    running: dict[str, tuple[Recipe, float]] = {}  # host → the recipe it runs now, since when

    def under_way() -> str:
        with lock:
            busy = [(host, recipe, time.monotonic() - since) for host, (recipe, since) in sorted(running.items())]
        if not busy:
            return ""  # every host waits for another or is connecting: nothing of its own to name
        return "applying recipes (" + "; ".join(
            f"{host}: step {r.step} {r.name.split('.', 1)[1]} for {seconds:.0f} s" for host, r, seconds in busy) + ")"

    def record(result: RecipeResult) -> None:
        with lock:
            results.append(result)
        on_result(result)
        with lock:  # said under the lock, so that steps finished by two hosts at once are said in order
            for line in steps.add(result, time.monotonic() - started):
                said(line)

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
                with lock:
                    running[host.name] = (r, t0)
                try:
                    r.func(target)
                except Exception as error:  # a recipe's failure is reported per host, not raised
                    message = " ".join(str(error).split()) or type(error).__name__
                    record(RecipeResult(host.name, r.name, r.step, "failed", target.changes[before:], message, time.monotonic() - t0))
                    progress.finish(r.name, host.name, ok=False)
                    failed_before = f"an earlier recipe failed on {host.name}"
                    continue
                finally:
                    with lock:
                        del running[host.name]
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
        with elapsed(say, under_way) as said:
            futures = [pool.submit(provision, h) for h in topology.hosts]
            for future in futures:
                while not future.done():
                    time.sleep(0.05)  # short waits keep the main thread able to take Ctrl-C
                future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    report = ConvergeReport(sorted(results, key=lambda r: (r.step, r.host)), time.monotonic() - started)
    return report
