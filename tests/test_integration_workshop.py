"""Workshop mode on a real lab, the attendee's way: the attendee's guide (docs/steps/) run as written, from bare
hosts through step 5 (for each step `lab check K` fails, `lab solve K` stands in for the attendee, `lab check K`
passes); `lab reset` rewinds; `lab deploy`/`lab rollback` under load lose no request; a deploy whose health check fails stops with the old release serving; `fab -H web1 status` works;
`lab demo shared-nothing` makes step 5's checks fail and its --undo makes them pass."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from lab.recipes import PROJECT_ROOT
from lab.testing import (ScratchLab, change_the_site, copy_of_project, current_release, locust_while, needs_root,
                         runnable_commands, scratch_lab, served_release)

NAME = os.environ.get("TEST_LAB_NAME", "labshop")
pytestmark = pytest.mark.integration

needs_root()

WEBS = ("web1", "web2")
USERS = 10  # Locust's anonymous site visitors through lb1: a bounded load, ~30 requests/s
LOAD_AROUND_S = 5  # load flowing before the deploy starts and after it ends
LOAD_LIMIT_S = 600  # Locust's own bound, should a deploy hang
CHECK_FAILED, NO_SNAPSHOT, DEPLOY_FAILED = 12, 71, 72
STEPS_DOCS = PROJECT_ROOT / "docs" / "steps"
DOCS_SUBNET = "192.168.56."  # the default lab's, as the docs show it
SHEET_CACHE_S = 30  # the site's balance-sheet cache timeout (app/accounts/views.py BALANCE_CACHE_SECONDS)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project: the test edits its app/ as an attendee would before a deploy."""
    return copy_of_project(tmp_path_factory.mktemp("project"))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, project: Path):
    with scratch_lab(NAME, range(110, 120), folder=tmp_path_factory.mktemp("workshop"),
                     extra_env={"PYTHONPATH": str(project)}) as the_lab:
        yield the_lab
        print(f"\n[workshop] seconds per command: {the_lab.seconds}")


def under_load(lab: ScratchLab, results: Path, *args: str) -> dict:
    """`lab ARGS` while Locust's visitors hit lb1 (whatever its exit code); what Locust counted, and how long it took."""
    figures = locust_while(lab, results, lambda: lab.run(*args, timeout=LOAD_LIMIT_S - 60), USERS, LOAD_AROUND_S,
                           LOAD_LIMIT_S)
    result = figures["result"]
    figures.update(code=result.returncode, stdout=result.stdout, stderr=result.stderr)
    print(f"\n[workshop] lab {' '.join(args)}: exit {result.returncode} in {figures['seconds']} s; "
          f"{figures['requests']} requests through lb1 (±{LOAD_AROUND_S} s), {figures['failures']} failed")
    return figures


def test_the_attendees_guide_runs_as_written(lab: ScratchLab) -> None:
    """Every runnable block of docs/steps/N-*.md, in step order, on this lab: the attendee's way through steps 1 → 5
    (`lab check K` fails before the work, `lab solve K` stands in for the attendee, `lab check K` passes), each
    command's exit code and the output lines the docs show beside it."""
    pages = sorted(STEPS_DOCS.glob("[0-9]-*.md"), key=lambda page: int(page.name.split("-", 1)[0]))
    commands = [command for page in pages for command in runnable_commands(page, PROJECT_ROOT)]
    assert len(commands) > 20
    ours = ".".join(lab.subnet.split(".")[:3]) + "."  # the docs show the default lab's addresses
    for name in ("fabfile.py", "fabric.yaml"):  # the attendee works in the project: `fab` finds its fabfile there
        if not (lab.folder / name).exists():
            (lab.folder / name).symlink_to(PROJECT_ROOT / name)
    env = {**lab.env, "PATH": f"{Path(sys.executable).parent}:{lab.env.get('PATH', '')}"}  # lab and fab of this venv
    for command in commands:
        line = command.command.replace(DOCS_SUBNET, ours)
        result = subprocess.run(["bash", "-c", line], cwd=lab.folder, env=env, capture_output=True, text=True,
                                timeout=900, stdin=subprocess.DEVNULL)
        print(f"[workshop] {command.source}: $ {line} -> exit {result.returncode}")
        expected = replace(command, expected=tuple(e.replace(DOCS_SUBNET, ours) for e in command.expected))
        wrong = expected.mismatch(result.returncode, result.stdout + result.stderr)
        assert wrong is None, f"{command.source}: `{line}` {wrong}\n{result.stdout}{result.stderr}"


def test_reset_rewinds_every_host_to_the_end_of_a_step(lab: ScratchLab) -> None:
    output = lab.ok("reset", "--to-step", "2")
    print(f"\n[workshop] {output.strip().splitlines()[-1]}")
    assert "every host is back at the end of step 2" in output
    rewound = lab.run("check", "3")
    assert rewound.returncode == CHECK_FAILED  # step 3's app server is gone again
    lab.ok("check", "2")
    steps = lab.ok("steps")
    assert "Configure the database" in steps
    output = lab.ok("reset", "--to-step", "5")  # forward again: step 5's snapshot is still there
    print(f"[workshop] {output.strip().splitlines()[-1]}")
    lab.ok("check", "5")


def test_deploy_rolls_a_changed_template_out_without_a_failed_request(lab: ScratchLab, project: Path,
                                                                   tmp_path: Path) -> None:
    before = {web: current_release(lab, web) for web in WEBS}
    marker = f"<!-- deployed {time.time_ns()} -->"
    change_the_site(project, marker)
    figures = under_load(lab, tmp_path / "deploy", "deploy")
    assert figures["code"] == 0, figures["stderr"]
    assert figures["failures"] == 0, figures["failure_report"]
    assert figures["requests"] > 50
    after = {web: served_release(lab, web) for web in WEBS}
    assert len(set(after.values())) == 1 and " " not in after["web1"], after  # one release, on both hosts
    assert after["web1"] != before["web1"] and after["web1"] == current_release(lab, "web1")
    for web in WEBS:
        assert f"{web}: out of the balancer" in figures["stdout"]
    site, opener = lab.site()
    for _ in range(4):  # round robin: both hosts
        with opener.open(f"{site}/", timeout=10) as response:
            assert marker in response.read().decode()
    lab.ok("check", "4")  # the deploy log names the release


def test_fab_status_reads_the_labs_ssh_config(lab: ScratchLab, project: Path) -> None:
    fab = Path(sys.executable).with_name("fab")
    result = subprocess.run([str(fab), "-r", str(project), "-H", "web1,web2", "status"], cwd=lab.folder, env=lab.env,
                            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    print(f"\n[workshop] fab -H web1,web2 status:\n{result.stdout}")
    assert f"web1: current {current_release(lab, 'web1')}, previous " in result.stdout
    assert "web2: current " in result.stdout


def test_a_deploy_whose_health_check_fails_leaves_the_old_release_serving(lab: ScratchLab, project: Path,
                                                                        tmp_path: Path) -> None:
    serving = {web: served_release(lab, web) for web in WEBS}
    views = project / "app" / "accounts" / "views.py"
    good = views.read_text()
    # A release that starts and migrates, but whose health check fails: what only the health check can catch.
    views.write_text(good + "\n\ndef health(request):\n    return JsonResponse({'status': 'broken'}, status=503)\n")
    try:
        figures = under_load(lab, tmp_path / "broken", "deploy")
    finally:
        views.write_text(good)
    assert figures["code"] == DEPLOY_FAILED, figures["stderr"]
    assert "web1 failed its health check" in figures["stderr"]
    assert figures["failures"] == 0, figures["failure_report"]  # web1 was out of the pool while it failed
    assert {web: served_release(lab, web) for web in WEBS} == serving  # web2 never switched, web1 went back


def test_rollback_puts_the_release_before_back(lab: ScratchLab, tmp_path: Path) -> None:
    deployed = current_release(lab, "web1")
    figures = under_load(lab, tmp_path / "rollback", "rollback")
    assert figures["code"] == 0, figures["stderr"]
    assert figures["failures"] == 0, figures["failure_report"]
    back = {web: served_release(lab, web) for web in WEBS}
    assert len(set(back.values())) == 1 and back["web1"] != deployed
    assert all(current_release(lab, web) == back["web1"] for web in WEBS)


def test_the_shared_nothing_demo_fails_step_5s_checks_and_its_undo_passes_them(lab: ScratchLab) -> None:
    output = lab.ok("demo", "shared-nothing")
    assert "web1: switched to the slides code" in output and "web2: switched to the slides code" in output
    site, opener = lab.site()
    for _ in range(20):  # every app server process computes its global BALANCE once, now
        with opener.open(f"{site}/balance/", timeout=10) as response:
            assert response.status == 200
    time.sleep(SHEET_CACHE_S + 3)  # the cache would have recomputed the sheet by now; a global never is
    broken = lab.run("check", "5")
    assert broken.returncode == CHECK_FAILED, broken.stdout + broken.stderr
    print(f"\n[workshop] lab check 5 with the slides' anti-patterns:\n{broken.stdout}")
    assert "test_no_web_process_serves_a_balance_sheet_older_than_its_cache_allows" in broken.stdout
    assert "test_a_report_generated_through_the_balancer_reads_back_on_every_web_host" in broken.stdout
    assert " 404 " in broken.stdout  # the report's view on the web host that has no /tmp/report.txt
    assert "web1: back to the site as it should be" in lab.ok("demo", "shared-nothing", "--undo")
    lab.ok("check", "5")
