"""Rolling restarts under load: web×2 behind lb1, Locust through lb1 while `lab up` rolls out a new release and
switches the app server both ways, and while web2 loses its power; not one request may fail, and both hosts must
serve what was rolled out."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest

from lab.testing import (ScratchLab, change_the_site, copy_of_project, locust_while, needs_root, scratch_lab,
                         served_release)

NAME = os.environ.get("TEST_LAB_NAME", "labroll")  # its own name and subnet: other labs on this machine must not matter
pytestmark = pytest.mark.integration

needs_root()

WEBS = ("web1", "web2")
USERS = 10  # Locust's anonymous SiteVisitor: pages, DB views, static files; ~30 requests/s through lb1
LOAD_BEFORE_S = 5  # load flowing before the rollout starts, and after it ends
LOAD_LIMIT_S = 900  # Locust's own bound, should a rollout hang


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project, so the test can change its site the way a user would: by editing app/."""
    return copy_of_project(tmp_path_factory.mktemp("project"))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, project: Path):
    # `python -m lab` runs the copy: its app/ is the site deployed
    with scratch_lab(NAME, range(80, 100), folder=tmp_path_factory.mktemp("rolling"),
                     extra_env={"PYTHONPATH": str(project)}) as the_lab:
        yield the_lab


def on(lab: ScratchLab, host: str, script: str) -> str:
    return lab.ok("ssh", host, script).strip()


def app_server(lab: ScratchLab, host: str) -> str:
    return on(lab, host, "for u in gunicorn apache2; do systemctl is-active --quiet $u && printf '%s ' $u; done; true")


def load_while(lab: ScratchLab, results: Path, action: Callable[[], str]) -> dict:
    """`action()` while Locust's users hit lb1 (from LOAD_BEFORE_S before it to LOAD_BEFORE_S after); what Locust
    counted, how long the action took and what it printed."""
    figures = locust_while(lab, results, action, USERS, LOAD_BEFORE_S, LOAD_LIMIT_S)
    return {**figures, "rollout_s": figures["seconds"], "load_s": round(figures["seconds"] + 2 * LOAD_BEFORE_S, 1),
            "output": figures["result"]}


def under_load(lab: ScratchLab, results: Path, *up_args: str, web: int = 2) -> dict:
    """`lab up ARGS` while Locust's users hit lb1; what Locust counted, and how long the rollout took."""
    figures = load_while(lab, results, lambda: lab.ok("up", f"--web={web}", *up_args, timeout=LOAD_LIMIT_S - 60))
    output = figures["output"]
    print(f"\n[rolling] lab up --web={web} {' '.join(up_args) or '(new release)'}: {figures['requests']} requests through lb1, "
          f"{figures['failures']} failed; rollout {figures['rollout_s']} s (load {figures['load_s']} s)")
    for line in output.splitlines():
        if "balancer's pool" in line or "reloaded" in line or "restarted" in line:
            print(f"[rolling]   {' '.join(line.split())}")
    return figures


def test_up_web2(lab: ScratchLab) -> None:
    output = lab.ok("up", "--web=2", timeout=1500)
    assert "0 failed" in output
    assert [app_server(lab, web) for web in WEBS] == ["gunicorn", "gunicorn"]


def test_converged_lab_changes_nothing(lab: ScratchLab) -> None:
    output = lab.ok("up", "--web=2")
    assert "no changes" in output, output


def rolled_out_change(project: Path) -> str:
    """What a user does before a deploy: edit a template of the site (in the test's copy of the project)."""
    marker = f"<!-- rolled out {time.time_ns()} -->"
    change_the_site(project, marker)
    return marker


def pages_through_lb1(lab: ScratchLab, count: int = 6) -> list[str]:
    site, opener = lab.site()
    pages = []
    for _ in range(count):  # round robin over the web hosts
        with opener.open(f"{site}/", timeout=10) as response:
            pages.append(response.read().decode())
    return pages


def hosts_serving(lab: ScratchLab, count: int = 8) -> set[str]:
    """The web hosts that answered `count` requests through lb1 (the site's X-Served-By header)."""
    site, opener = lab.site()
    served = set()
    for _ in range(count):
        with opener.open(f"{site}/hello/", timeout=10) as response:
            served.add(response.headers.get("X-Served-By"))
    return served


def test_new_release_rolls_out_without_a_failed_request(lab: ScratchLab, project: Path, tmp_path: Path) -> None:
    before = {web: served_release(lab, web) for web in WEBS}
    marker = rolled_out_change(project)
    figures = under_load(lab, tmp_path / "release")
    assert figures["failures"] == 0, figures["failure_report"]
    assert figures["requests"] > 100
    for web in WEBS:
        assert f"took {web} out of the balancer's pool for restarting gunicorn" in figures["output"]
    after = {web: served_release(lab, web) for web in WEBS}
    assert len(set(after.values())) == 1 and " " not in next(iter(after.values())), after  # one release, both hosts
    assert after["web1"] != before["web1"] and after["web2"] != before["web2"]
    assert all(marker in page for page in pages_through_lb1(lab))


@pytest.mark.parametrize("server, unit", [("mod_wsgi", "apache2"), ("gunicorn", "gunicorn")])
def test_switching_the_app_server_loses_no_request(lab: ScratchLab, tmp_path: Path, server: str, unit: str) -> None:
    figures = under_load(lab, tmp_path / server, f"--app-server={server}")
    assert figures["failures"] == 0, figures["failure_report"]
    assert figures["requests"] > 100
    for web in WEBS:
        assert f"took {web} out of the balancer's pool for switching" in figures["output"]
        assert app_server(lab, web) == unit
    assert len({served_release(lab, web) for web in WEBS}) == 1
    assert "no changes" in lab.ok("up", "--web=2", f"--app-server={server}")


def test_an_interrupted_scale_up_sends_nothing_to_a_host_not_yet_serving(lab: ScratchLab) -> None:
    process = subprocess.Popen(
        lab.command("up", "--web=3"), cwd=lab.folder, env=lab.env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    lines = []
    for line in process.stdout:  # type: ignore[union-attr]
        lines.append(line)
        if " web3 " in line and " virtualenv " in line:  # minutes after lb1's own recipes could have run
            break
    os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    assert process.wait(60) == 130, "".join(lines) + process.stderr.read()  # type: ignore[union-attr]
    web3 = next(h["ip"] for h in lab.state["topology"]["hosts"] if h["name"] == "web3")
    assert on(lab, "web3", "systemctl is-active gunicorn || true") != "active"  # web3 cannot serve yet...
    assert f"server {web3}:" not in on(lab, "lb1", "cat /etc/nginx/sites-enabled/bank")  # ...and gets nothing
    lab.ok("up", "--web=3", timeout=1500)
    assert f"server {web3}:8000 max_fails" in on(lab, "lb1", "cat /etc/nginx/sites-enabled/bank")


def test_a_web_host_losing_its_power_mid_load_costs_no_request(lab: ScratchLab, tmp_path: Path) -> None:
    """The workshop's "crash a web server", as `lab demo crash web2` does it: every process of web2 killed at once
    (the provider's power_off) under the demo's own clients and Locust's users; the balancer sends each request web2
    cannot answer to web1, so no user sees an error. It leaves web2 revived."""
    lab.ok("up", "--web=2", timeout=1500)
    assert hosts_serving(lab) == {"web1", "web2"}  # both hosts serve before the crash
    figures = load_while(lab, tmp_path / "crash", lambda: lab.ok("demo", "crash", "web2", timeout=300))
    print(f"\n[rolling] web2 lost its power under load: {figures['requests']} Locust requests through lb1, "
          f"{figures['failures']} failed (load {figures['load_s']} s); the demo said:\n{figures['output']}")
    assert figures["failures"] == 0, figures["failure_report"]
    assert figures["requests"] > 50
    assert re.search(r"^lab: \d{3,} requests through the balancer, 0 failed; \d+ answered after the crash", figures["output"],
                     re.MULTILINE), figures["output"]
    status = lab.run("status")
    assert "not running: web2" in status.stdout + status.stderr
    lab.ok("up", timeout=900)  # revives web2 and puts it back in the balancer's pool
    assert hosts_serving(lab) == {"web1", "web2"}


def test_with_one_web_host_gunicorn_reloads_in_place_without_a_failed_request(lab: ScratchLab, project: Path,
                                                                             tmp_path: Path) -> None:
    lab.ok("up", "--web=1")
    before = served_release(lab, "web1")
    marker = rolled_out_change(project)
    figures = under_load(lab, tmp_path / "web1", web=1)
    assert figures["failures"] == 0, figures["failure_report"]
    assert figures["requests"] > 100
    assert "out of the balancer's pool" not in figures["output"]  # nothing else could serve: no drain
    assert "reloaded gunicorn" in figures["output"]
    after = served_release(lab, "web1")
    assert after != before and " " not in after
    assert all(marker in page for page in pages_through_lb1(lab))
