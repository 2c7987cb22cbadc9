"""Workshop mode: do a step by hand, then `lab check K`; `lab solve K` when stuck; `lab steps`; `lab reset --to-step K`.

Which step the lab's own recipes last completed, and which steps have a snapshot to rewind to, are kept in
.lab/steps.json (removed with the lab). A snapshot is taken by lab up/lab solve once a step's recipes all
succeeded (`step_completed`, lifecycle.up's on_converged), unless the lab had already gone past that step.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from lab import lifecycle, verify
from lab.errors import ChecksFailed, NoSnapshot, NotUp, SnapshotsUnsupported, UsageError
from lab.files import write_atomically
from lab.progress import elapsed
from lab.providers import get_provider
from lab.recipes import ConvergeReport, RecipeResult, discover_steps
from lab.system import Say
from lab.topology import Overrides, Topology

STEPS_FILE = "steps.json"
BARE = 0  # `lab up --step 0`: the hosts alone, nothing provisioned (where an attendee starts step 1)


@dataclass(frozen=True)
class FailedCheck:
    """One failing check as `lab check` prints it: what failed, why (its assertion), what to try (its hint)."""

    check: str
    why: str
    hint: str


@dataclass(frozen=True)
class StepRow:
    """One line of `lab steps`."""

    number: int
    title: str
    applied: bool | None  # the lab's recipes completed it (None: no lab here)
    passes: bool | None  # its checks pass on the hosts now (None: not checked, e.g. no lab up)
    failed: int  # how many of its checks failed
    snapshot: bool  # `lab reset --to-step K` can come back here


def step_numbers() -> list[int]:
    return [step.number for step in discover_steps()]


def require_step(step: int, bare: bool = False) -> None:
    """A step of the workshop (or, with bare, 0 too); UsageError (exit 2) naming them otherwise."""
    if bare and step == BARE:
        return
    if step not in step_numbers():
        choices = f"{BARE} (bare hosts), " if bare else ""
        raise UsageError(f"there is no step {step}; the workshop's steps: {choices}{lifecycle.step_names()}")


# -- what the lab has been through (.lab/steps.json) -------------------------------------------------------

def _steps_file(project: lifecycle.Project) -> Path:
    return project.labdir.path / STEPS_FILE


def progress(project: lifecycle.Project) -> dict[str, Any]:
    """{"applied": K or None, "snapshots": [K, ...]}: the last step the lab's recipes completed, and the rewinds."""
    path = _steps_file(project)
    data = json.loads(path.read_text()) if path.exists() else {}
    return {"applied": data.get("applied"), "snapshots": sorted(data.get("snapshots", []))}


def _record(project: lifecycle.Project, applied: int, snapshot: int | None = None) -> None:
    data = progress(project)
    data["applied"] = applied
    if snapshot is not None:
        data["snapshots"] = sorted(set(data["snapshots"]) | {snapshot})
    write_atomically(_steps_file(project), json.dumps(data) + "\n")


def snapshot_name(step: int) -> str:
    return f"step-{step}"


def step_completed(project: lifecycle.Project, provider: Any, max_step: int | None, report: ConvergeReport,
                   say: Say) -> None:
    """lifecycle.up's on_converged: every recipe of steps ≤ K succeeded; remember it and snapshot the hosts.

    A lab already past K (`lab up --step 2` after step 5) still has the later steps on its hosts: no snapshot.
    A converge that changed nothing keeps the snapshot it has (a plain `lab up` of a converged lab copies nothing).
    """
    step = max(step_numbers()) if max_step is None else max_step
    before = progress(project)
    if before["applied"] is not None and before["applied"] > step:
        say(f"the lab is past step {step} (at step {before['applied']}): no snapshot of step {step} taken")
        return
    if report.changes == 0 and step in before["snapshots"]:
        _record(project, step)
        _say_what_answers(project, step, say, max_step is not None)
        return
    try:
        # A full lab's 14 hosts take a minute or more: "still …" lines say so (a trial saw 80 s without a word).
        with elapsed(say, f"taking the snapshot of step {step} (`lab reset --to-step {step}`)"):
            seconds = provider.snapshot(project, snapshot_name(step))
    except SnapshotsUnsupported:
        _record(project, step)
        _say_what_answers(project, step, say, max_step is not None)
        return
    _record(project, step, snapshot=step)
    slowest = max(seconds.values(), default=0.0)
    say(f"step {step} done; snapshot taken ({slowest:.1f} s per host at most): `lab reset --to-step {step}` comes back here")
    _say_what_answers(project, step, say, max_step is not None)


APP_SERVER_NAMES = {"gunicorn": "Gunicorn", "mod_wsgi": "Apache + mod_wsgi"}


def what_answers(topology: Topology, step: int) -> str | None:
    """Step K's one line on what now answers and where (its package's ANSWERS), with this lab's hosts filled in."""
    from provision.step1_bootstrap.recipes import APP_PORT  # provision/ is loaded late (it imports lab.recipes)
    for found in discover_steps():
        answers = getattr(importlib.import_module(found.package), "ANSWERS", None)
        if found.number != step or not answers or not topology.tier("web"):
            continue
        web1 = topology.tier("web")[0]
        balancers = topology.serving("https")
        return answers.format(web1=web1.name, web1_ip=web1.ip, port=APP_PORT, db1=topology.db_primary.name,
                              lb_ip=topology.site_address if balancers else "?",
                              app_server=APP_SERVER_NAMES.get(topology.app_server, topology.app_server))
    return None


def _say_what_answers(project: lifecycle.Project, step: int, say: Say, stepwise: bool) -> None:
    """After `lab up --step K` or `lab solve K` (a plain `lab up` names the site itself)."""
    line = what_answers(project.labdir.topology(), step) if stepwise else None
    if line:
        say(f"now: {line}")


# -- lab check / lab steps ----------------------------------------------------------------------------------

class _CheckWatcher:
    """A pytest plugin beside lab's own: each failing check with its assertion's message and its module's hint."""

    def __init__(self) -> None:
        self.failed: list[FailedCheck] = []
        self.ran: dict[str, int] = {}  # step folder -> checks that ran (passed or failed)
        self.failures: dict[str, int] = {}  # step folder -> checks that failed

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo) -> Any:
        outcome = yield
        report = outcome.get_result()
        folder = Path(report.location[0]).parent.name
        if report.when == "call" and report.passed:
            self.ran[folder] = self.ran.get(folder, 0) + 1
        if report.failed:
            self.ran[folder] = self.ran.get(folder, 0) + 1
            self.failures[folder] = self.failures.get(folder, 0) + 1
            why = why_failed(call.excinfo.exconly() if call.excinfo else str(report.longrepr))
            self.failed.append(FailedCheck(verify.check_name(report), why,
                                           hint_for(getattr(item, "module", None), getattr(item, "originalname", ""), folder)))


# testinfra's words for a command that failed: "Unexpected exit code 2 for CommandResult(..., exit_status=2,
# command=b'grep ...', _stdout=b'', _stderr=b'...')"
COMMAND_RESULT = re.compile(r"exit_status=(-?\d+), command=(?P<command>b(['\"]).*?\3), _stdout=(?P<stdout>b(['\"]).*?\5), "
                            r"_stderr=(?P<stderr>b(['\"]).*?\7)\)", re.DOTALL)
# testinfra's way to run a command as another user: sudo -u USER /bin/sh -c 'COMMAND'
SUDO_SHELL = re.compile(r"^sudo (-u \S+ )?/bin/sh -c ")
COMMAND_SHOWN = 80  # a command's first characters, in a why that names it


def _text_of(literal: str) -> str:
    """A Python bytes literal's text (b'...'), or the literal itself if it is not one."""
    try:
        return ast.literal_eval(literal).decode(errors="replace")
    except (ValueError, SyntaxError, AttributeError):
        return literal


def last_meaningful_line(text: str) -> str:
    """The line that says what went wrong: a traceback's last line (the exception's message), no carets."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and set(line.strip()) - set("^~")]
    return lines[-1] if lines else ""


def command_shown(command: str) -> str:
    """The command as the check meant it (sudo's shell wrapping undone), its start only if long."""
    if SUDO_SHELL.match(command):
        try:
            command = shlex.split(SUDO_SHELL.sub("", command, count=1))[0]
        except (ValueError, IndexError):
            pass
    command = " ".join(command.split())
    return command if len(command) <= COMMAND_SHOWN else command[: COMMAND_SHOWN - 1] + "…"


def why_failed(message: str, width: int = 200) -> str:
    """A failed check's message on one line: its own message (the last meaningful line of it: an exception's, not a
    traceback), or the assertion and its first "where" ("assert False + where False = <service gunicorn>.is_running"),
    or the command testinfra ran and the last line it said."""
    message = message.removeprefix("AssertionError: ")
    own, assertion, _ = message.partition("\nassert ")
    # testinfra's own words on a command (check_output's "Unexpected exit code 1 for CommandResult(...)"), not a
    # CommandResult pytest printed in the assertion's "where" (cut short by pytest: "cd /srv/ba...-u bank")
    command = COMMAND_RESULT.search(own if assertion else message)
    if assertion and own.strip() and not command:  # the check's own message, then pytest's rewritten assertion
        text = last_meaningful_line(own)
    elif command:
        stderr = _text_of(command["stderr"])
        sudo_said = [line for line in stderr.splitlines() if line.startswith("sudo: ")]
        # sudo's first complaint is the cause ("unknown user postgres"), what follows its consequence
        said = (sudo_said[0] if sudo_said and len(sudo_said) == len([l for l in stderr.splitlines() if l.strip()])
                else last_meaningful_line(stderr)) or last_meaningful_line(_text_of(command["stdout"]))
        text = f"`{command_shown(_text_of(command['command']))}` exited {command[1]}" + (f": {said}" if said else "")
    else:
        if message.startswith("assert "):
            text = " + where ".join(" ".join(message.split()).split(" + where ")[:2])
        else:  # an exception's own words (its last line: a traceback's message)
            text = last_meaningful_line(message)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def hint_for(module: Any, check: str, folder: str) -> str:
    """The check module's HINTS[check] (one line: what to try), or the step's own way out."""
    hint = getattr(module, "HINTS", {}).get(check)
    step = folder.removeprefix("step").split("_", 1)[0]
    return hint or f"see docs/steps/ for step {step}, or `lab solve {step}` to have the lab do it"


def _running(project: lifecycle.Project) -> tuple[dict, Any]:
    state, topology = lifecycle.running_lab(project)
    stopped = [s.name for s in lifecycle.status(project, services=False) if s.state != "running"]
    if stopped:
        raise NotUp(f"hosts not running: {', '.join(stopped)}; run `lab up`")
    return state, topology


def _run_checks(project: lifecycle.Project, only_step: int | None) -> _CheckWatcher:
    state, topology = _running(project)
    watcher = _CheckWatcher()
    try:
        # -q once more (-qq): no pytest summary line ("33 failed, 4 errors"): lab says what failed its own way
        verify.run_checks(project.labdir, topology, lifecycle.facts_of(state, topology), only_step=only_step,
                          extra_args=["--tb=no", "-rN", "-q"], observers=[watcher])
    except ChecksFailed:
        if not watcher.failed:
            raise  # not a failing check (the checks could not run): the error says what happened
    return watcher


def check(project: lifecycle.Project, step: int) -> list[FailedCheck]:
    """Step K's checks against what is on the hosts now, applying no recipe; the failing ones (empty: it passes)."""
    require_step(step)
    return _run_checks(project, step).failed


def steps(project: lifecycle.Project, run_checks: bool = True) -> list[StepRow]:
    """Every step; for a lab that is up, whether lab applied it, whether its checks pass now, and its snapshot."""
    found = progress(project) if project.labdir.exists() else {"applied": None, "snapshots": []}
    watcher = None
    if run_checks and project.labdir.exists():
        try:
            watcher = _run_checks(project, None)
        except NotUp:
            watcher = None
    rows = [StepRow(BARE, "Bare hosts (`lab up --step 0`): nothing provisioned, no checks", None if not project.labdir.exists()
                    else found["applied"] is not None, None, 0, BARE in found["snapshots"])]
    for step in discover_steps():
        folder = step.folder.name
        applied = None if not project.labdir.exists() else (found["applied"] or 0) >= step.number
        passes = None if watcher is None or not watcher.ran.get(folder) else not watcher.failures.get(folder)
        rows.append(StepRow(step.number, step.title, applied, passes, (watcher.failures.get(folder, 0) if watcher else 0),
                            step.number in found["snapshots"]))
    return rows


# -- lab solve / lab reset ---------------------------------------------------------------------------------

def solve(project: lifecycle.Project, step: int, say: Say, on_result: Callable[[RecipeResult], None]) -> ConvergeReport:
    """Apply the recipes of steps ≤ K (earlier ones change nothing where they are done) for a stuck attendee."""
    require_step(step)
    lifecycle.running_lab(project)  # a lab to solve on: `lab up --step K-1` makes one
    return lifecycle.up(project, Overrides(), say, on_result, max_step=step, on_converged=step_completed)


def reset(project: lifecycle.Project, step: int, say: Say) -> dict[str, float]:
    """Every host back to the end of step K, from its snapshot; seconds per host. Nothing changes when there is none."""
    require_step(step, bare=True)
    state, topology = lifecycle.running_lab(project)
    found = progress(project)
    if step not in found["snapshots"]:
        reached = found["applied"]
        where = "has no steps done by lab yet" if reached is None else f"got to step {reached}"
        raise NoSnapshot(f"this lab was never at the end of step {step} (it {where}); "
                         f"`lab solve {step}` takes it there, or reset to one of: "
                         f"{', '.join(map(str, found['snapshots'])) or 'none yet'}")
    provider = get_provider(state["provider"])
    with project.labdir.locked():
        lifecycle.close_ssh_masters(project.labdir, [h.name for h in topology.hosts])  # they talk to the old hosts
        seconds = provider.restore(project, snapshot_name(step), say)
        lifecycle.wait_until_booted(project.labdir, [h.name for h in topology.hosts])
        _record(project, step)
    return seconds
