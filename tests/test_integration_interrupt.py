"""Ctrl-C anywhere in `lab up --web=3`, then the same command converges the first time: a real lab, interrupted at chosen points."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from lab.testing import ScratchLab, needs_root, scratch_lab

NAME = os.environ.get("TEST_LAB_NAME", "labintr")  # TEST_LAB_NAME: two runs can share one machine
UP = ("up", "--web=3")
WEB_HOSTS = ("web1", "web2", "web3")
VENV = "srv/bank/venv"
pytestmark = pytest.mark.integration

needs_root()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    with scratch_lab(NAME, range(120, 140), folder=tmp_path_factory.mktemp("interrupt")) as the_lab:
        yield the_lab
        print(f"\n{NAME}: seconds per verb {the_lab.seconds}")


def lab_processes(name: str) -> dict[int, str]:
    """Pid → command line of every process running in this lab's hosts (found through their cgroups, seen from here)."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if f"/lab-{name}/" not in (proc / "cgroup").read_text():
                continue
            found[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
    return found


def running(*words: str, without: str = "") -> Callable[[list[str]], bool]:
    """Interrupt point: a process of the lab's hosts whose command line has every word (and not `without`)."""

    def now(lines: list[str]) -> bool:
        return any(all(w in c for w in words) and not (without and without in c) for c in lab_processes(NAME).values())

    now.__name__ = f"running {' '.join(words)}"
    return now


def printed(text: str, then: float = 0.0) -> Callable[[list[str]], bool]:
    """Interrupt point: `then` seconds after `lab up` printed a line with this text."""
    seen: list[float] = []

    def now(lines: list[str]) -> bool:
        if not seen and any(text in line for line in lines):
            seen.append(time.monotonic())
        return bool(seen) and time.monotonic() - seen[0] >= then

    return now


def interrupt_up(lab: ScratchLab, point: Callable[[list[str]], bool], limit: float = 600) -> list[str]:
    """`lab up --web=3` with Ctrl-C (SIGINT to its process group, as a terminal sends) when point() first holds."""
    process = subprocess.Popen(
        lab.command(*UP), cwd=lab.folder, env=lab.env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    lines: list[str] = []

    def watch() -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            lines.append(line)

    threading.Thread(target=watch, daemon=True).start()
    deadline = time.monotonic() + limit
    while not point(lines):
        if process.poll() is not None:
            pytest.fail(f"lab up ended ({process.returncode}) before the interrupt point:\n{''.join(lines)}{process.stderr.read()}")
        assert time.monotonic() < deadline, f"interrupt point never reached:\n{''.join(lines)}"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)
    assert process.wait(60) == 130, "".join(lines) + process.stderr.read()  # type: ignore[operator]
    assert "interrupted" in process.stderr.read()  # type: ignore[union-attr]
    return lines


def host_path(lab: ScratchLab, host: str, path: str) -> Path:
    return Path(lab.state["resources"]["hosts"][host]["root"]) / "merged" / path


def half_made_venvs(lab: ScratchLab) -> list[str]:
    return [h for h in WEB_HOSTS
            if host_path(lab, h, f"{VENV}/bin/python").exists() and not host_path(lab, h, f"{VENV}/.lab-complete").exists()]


def converges(lab: ScratchLab) -> str:
    output = lab.ok(*UP)
    assert "0 failed" in output
    return output


def test_interrupted_while_creating_hosts(lab: ScratchLab) -> None:
    lines = interrupt_up(lab, printed("booting web3"))
    assert not any(line.lstrip().startswith("changed") for line in lines), "interrupted too late: already provisioning"
    assert lab.state["status"] == "creating"
    converges(lab)


def test_interrupted_while_making_a_virtualenv(lab: ScratchLab) -> None:
    """The issue's case: a venv with bin/python but no bin/pip. Its maker is killed too, as a stopped host would."""
    for host in WEB_HOSTS:  # as before the first provisioning: no venv anywhere
        lab.ok("ssh", host, "rm", "-rf", f"/{VENV}")
    interrupt_up(lab, running("ensurepip"))  # venv made bin/python and is installing pip into it
    for pid, command in lab_processes(NAME).items():
        if "ensurepip" in command or "-m venv" in command:
            os.kill(pid, signal.SIGKILL)
    assert half_made_venvs(lab), "no web host had a half-made virtualenv at the interrupt"
    output = converges(lab)
    assert "created virtualenv" in output  # redone from scratch where it was half-made
    assert not half_made_venvs(lab) and all(host_path(lab, h, f"{VENV}/bin/pip").exists() for h in WEB_HOSTS)


def test_interrupted_while_making_a_virtualenv_left_running(lab: ScratchLab) -> None:
    """The venv's maker goes on on the host after the interrupt: the re-run waits for it instead of racing it."""
    for host in WEB_HOSTS:
        lab.ok("ssh", host, "rm", "-rf", f"/{VENV}")
    interrupt_up(lab, running("ensurepip"))  # ensurepip runs only while a venv is being made
    converges(lab)
    assert not half_made_venvs(lab) and all(host_path(lab, h, f"{VENV}/bin/pip").exists() for h in WEB_HOSTS)


def test_interrupted_while_installing_requirements(lab: ScratchLab) -> None:
    for host in WEB_HOSTS:
        lab.ok("ssh", host, "rm", "-rf", f"/{VENV}")
    # requirements.txt: the site's own install (ensurepip's inner pip install has "--find-links" too)
    interrupt_up(lab, running("pip", "install", "requirements.txt"))
    converges(lab)
    assert not half_made_venvs(lab) and all(host_path(lab, h, f"{VENV}/bin/gunicorn").exists() for h in WEB_HOSTS)


def test_interrupted_while_migrating(lab: ScratchLab) -> None:
    lab.ok("ssh", "db1", "runuser", "-u", "postgres", "--", "dropdb", "--force", "bank")
    interrupt_up(lab, running("manage.py", "migrate", without="--check"))
    output = converges(lab)
    assert "loaded sample data" in output


def test_interrupted_while_collecting_static_files(lab: ScratchLab) -> None:
    for host in WEB_HOSTS:
        lab.ok("ssh", host, "rm", "-f", "/srv/bank/static/.lab-release")
    interrupt_up(lab, running("manage.py", "collectstatic"))
    converges(lab)


def test_converged_after_every_interrupt(lab: ScratchLab) -> None:
    assert "no changes" in lab.ok(*UP)
    assert "all checks passed" in lab.ok("test")
