"""The workshop's demos as commands (`lab demo ...`): each does one thing on purpose and says what to look for."""

from __future__ import annotations

import time

from lab import faults, lifecycle, workshop
from lab.deploy import WebTargets
from lab.errors import NeedsStep, UsageError
from lab.providers import get_provider
from lab.system import Say
from provision.step5_pooler.recipes import site_overlay

BALANCER_STEP = 5  # the step that puts N web hosts behind the balancer: where "shared nothing" starts to matter
# The site's settings overlay (/etc/bank/bank.d/antipatterns.toml) that switches the slides' code on; no recipe owns
# it, so `lab up` leaves a running demo as it is, as it would an attendee's own edit.
ANTIPATTERNS_OVERLAY = "antipatterns"
SHARED_NOTHING = ("global_balance", "tmp_report")
# `lab demo crash`: a bounded load through the balancer (clients back to back on /health/, one query each), the
# host's plug pulled a few seconds in, so the figures show the time before the crash and after it.
CRASH_CLIENTS = 8
CRASH_LOAD_S = 20.0
CRASH_AFTER_S = 5.0


def _at_least_step(project: lifecycle.Project, step: int, demo: str) -> None:
    applied = workshop.progress(project)["applied"]
    if applied is None or applied < step:
        where = "no step yet" if applied is None else f"step {applied}"
        raise NeedsStep(f"the {demo} demo needs the lab at step {step} or later (it is at {where}): "
                        f"`lab solve {step}` or a plain `lab up`")


def shared_nothing(project: lifecycle.Project, say: Say, undo: bool = False) -> list[str]:
    """Switch the site to the slides' global BALANCE and /tmp/report.txt (or back, with undo), one web host at a time
    out of the balancer; the lines that tell an attendee what to look for."""
    lab = WebTargets(project)  # NotUp when there is no lab, or a host is not running
    try:
        _at_least_step(project, BALANCER_STEP, "shared-nothing")
        with project.labdir.locked():
            values = {} if undo else {"antipatterns": list(SHARED_NOTHING)}
            changed = []
            for name, t in lab.targets.items():
                if site_overlay(t, ANTIPATTERNS_OVERLAY, values):
                    changed.append(name)
                    say(f"{name}: {'back to the site as it should be' if undo else 'switched to the slides code'}")
        site = lifecycle.site_url(lab.topology)
        webs = len(lab.targets)
    finally:
        lab.close()
    unchanged = "" if changed else " (it already was: nothing changed)"
    if undo:
        return [f"the site keeps no state of its own on a web host again{unchanged}",
                "look: `lab check 5` passes; the balance sheet's \"Computed\" time moves again within 30 s"]
    lines = [f"the site now runs the slides' anti-patterns on every web host{unchanged}: the balance sheet in a "
             "module-level global BALANCE, reports handed over in /tmp/report.txt (app/accounts/views.py)",
             f"look: sign in (`lab creds`), generate a report at {site}/report/generate/ and reload the page it lands "
             "on: the web host that wrote /tmp/report.txt shows it, the other answers 404 (the X-Served-By header "
             "names which)",
             f"look: {site}/balance/ \"Computed\" stops moving: each process computed its global once and never "
             "again; after 30 s `lab check 5` fails, naming both checks",
             "`lab demo shared-nothing --undo` switches back; `lab check 5` passes again"]
    if webs < 2:
        lines.insert(1, "with one web host the report still works (one /tmp): `lab up --web=2` shows why it is wrong")
    return lines


def crash(project: lifecycle.Project, say: Say, host: str | None = None, clients: int = CRASH_CLIENTS,
          seconds: float = CRASH_LOAD_S, crash_after: float = CRASH_AFTER_S) -> list[str]:
    """The workshop's "crash a web server": HOST (default: the last web host) loses its power while clients load the
    site through the balancer; what they saw, and what to look at."""
    state, topology = lifecycle.running_lab(project)
    _at_least_step(project, BALANCER_STEP, "crash")
    webs = [web.name for web in topology.tier("web")]
    host = host or webs[-1]
    if host not in webs:
        raise UsageError(f"{host} is not a web host of this lab; its web hosts: {', '.join(webs)}")
    if len(webs) < 2:
        raise NeedsStep("the crash demo needs two web hosts or more, one to crash and one to keep serving: "
                        "`lab up --web=2`")
    stopped = [s.name for s in lifecycle.status(project, services=False) if s.state != "running"]
    if stopped:
        raise NeedsStep(f"hosts not running: {', '.join(stopped)}; `lab up` boots them first")
    url = lifecycle.site_url(topology) + faults.LOAD_PATH
    provider = get_provider(state["provider"])
    marks: dict[str, float] = {}

    def pull_the_plug(load_started: float) -> None:
        time.sleep(crash_after)
        marks["began"] = time.monotonic() - load_started
        say(f"{host}: power off now ({clients} clients on {url} meanwhile)")
        provider.power_off(project, host)
        marks["ended"] = time.monotonic() - load_started

    with project.labdir.locked():
        say(f"{clients} clients on {url} for {seconds:.0f} s; {host} loses its power {crash_after:.0f} s in")
        samples = faults.run_load(url, clients, seconds, during=pull_the_plug, cafile=str(lifecycle.ca_file(project)))
    if "ended" not in marks:
        raise NeedsStep(f"{host} was not powered off: the load ended first")
    figures = faults.summarize(samples, marks["began"], marks["ended"])
    after = [sample for sample in samples if sample.started >= marks["ended"]]
    served = f"{figures['requests']} requests through the balancer, {figures['failed']} failed"
    if figures["failed"]:
        served += (f" ({', '.join(f'{n}× {status}' for status, n in figures['failed_by_status'].items())}, "
                   f"within {figures['failure_window_s']:.1f} s)")
    return [f"{served}; {len(after)} answered after the crash, by the other web host(s)",
            f"look: `lab status` says {host} is not running; nginx on lb1 stopped sending to it at its first failed "
            f"connection (`lab ssh lb1 tail /var/log/nginx/error.log`); `lab test` fails {host}'s checks",
            f"`lab up` boots {host} again and the balancer sends it requests once it answers"]
