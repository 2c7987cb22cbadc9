"""Unit tests for the attendee's guide: runnable blocks parsed and matched, and a page per workshop step."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lab.recipes import PROJECT_ROOT
from lab.testing import DocCommand, runnable_commands
from lab.workshop import step_numbers

STEPS_DOCS = PROJECT_ROOT / "docs" / "steps"

SAMPLE = """# A page

```sh
lab destroy   # not runnable: only shown
```

```console runnable
$ lab check 1    # exits 12
failed step1_…
step 1: … check(s) failed

$ lab solve 1
now: web1
```

```console runnable
$ lab ssh web1 curl -si http://192.168.56.21:8000/health/
HTTP/1.1 200 OK
```
"""


def test_runnable_blocks_give_each_command_its_exit_code_and_expected_lines(tmp_path):
    page = tmp_path / "docs" / "page.md"
    page.parent.mkdir()
    page.write_text(SAMPLE)
    assert runnable_commands(page, tmp_path) == [
        DocCommand("docs/page.md:8", "lab check 1", 12, ("failed step1_…", "step 1: … check(s) failed")),
        DocCommand("docs/page.md:12", "lab solve 1", 0, ("now: web1",)),
        DocCommand("docs/page.md:17", "lab ssh web1 curl -si http://192.168.56.21:8000/health/", 0, ("HTTP/1.1 200 OK",)),
    ]


def test_a_run_matches_when_its_exit_code_is_right_and_the_lines_come_in_order():
    command = DocCommand("x.md:1", "lab check 1", 12, ("failed step1_…", "step 1: … check(s) failed"))
    output = "  failed step1_bootstrap/test_web.py::test_x[web1]\n    why: no\nlab: step 1: 3 check(s) failed (...)\n"
    assert command.mismatch(12, output) is None
    assert command.mismatch(0, output) == "exited 0, the docs say 12"
    swapped = "lab: step 1: 3 check(s) failed\n  failed step1_bootstrap/test_web.py::test_x[web1]\n"
    assert "no line 'step 1: … check(s) failed'" in command.mismatch(12, swapped)
    assert DocCommand("x.md:1", "true", 0, ("a.b",)).mismatch(0, "axb") is not None  # "." is a dot, not any character


def test_output_before_a_command_or_an_open_block_is_an_error(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```console runnable\nHTTP/1.1 200 OK\n```\n")
    with pytest.raises(ValueError, match="page.md:2: output before any command"):
        runnable_commands(page, tmp_path)
    page.write_text("```console runnable\n$ true\n")
    with pytest.raises(ValueError, match="page.md: a runnable block is not closed"):
        runnable_commands(page, tmp_path)


def step_pages() -> dict[int, Path]:
    return {int(page.name.split("-", 1)[0]): page for page in STEPS_DOCS.glob("[0-9]-*.md")}


def test_every_workshop_step_has_a_page():
    assert sorted(step_pages()) == sorted(set(step_numbers()))


@pytest.mark.parametrize("step", [1, 2, 3, 4, 5])
def test_each_steps_page_walks_it_the_attendees_way(step):
    """`lab check K` fails first (exit 12), then `lab solve K`, then `lab check K` passes: what the docs test runs."""
    commands = [c.command for c in runnable_commands(step_pages()[step], PROJECT_ROOT)]
    failing = next(c for c in runnable_commands(step_pages()[step], PROJECT_ROOT) if c.command == f"lab check {step}")
    assert failing.exit_code == 12
    assert commands.index(f"lab check {step}") < commands.index(f"lab solve {step}")
    assert f"lab check {step}" in commands[commands.index(f"lab solve {step}"):]


def test_the_guide_links_every_steps_page():
    guide = (STEPS_DOCS / "README.md").read_text()
    for page in step_pages().values():
        assert f"({page.name})" in guide, page.name
    assert not re.search(r"coming\)", guide)


def test_every_runnable_block_is_on_a_page_the_docs_test_runs():
    # test_integration_workshop.py runs docs/steps/N-*.md in step order: a runnable block anywhere else would be
    # shown as tested and never run.
    run = set(step_pages().values())
    pages = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").rglob("*.md"))]
    elsewhere = [page.relative_to(PROJECT_ROOT) for page in pages
                 if page not in run and "```console runnable" in page.read_text()]
    assert not elsewhere, f"runnable blocks the docs test never runs: {elsewhere}"
