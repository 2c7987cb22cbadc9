"""The `lab` command as tests and benchmarks drive it: a scratch lab in a folder of its own, or main() in process.

It lives in the package, not in tests/, because both tests/ and benchmarks/ use it: an installed module imports
from either without adding folders to sys.path. Nothing else in lab imports it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import pytest

from lab.bench.locust import BenchSettings, locust_command, output_paths, parse_stats_json
from lab.cli import main
from lab.machine.network import first_free_subnet
from lab.recipes import PROJECT_ROOT
from lab.topology import Overrides, Topology, resolve
from provision.step1_bootstrap.recipes import APP_USER, CURRENT, RELEASES
from provision.step3_appserver.recipes import REQUEST_TIMEOUT_S


def needs_root() -> None:
    """At an integration test module's top: real labs need root. In CI its absence is an error, elsewhere a skip."""
    if os.geteuid() == 0:
        return
    if os.environ.get("CI"):
        raise RuntimeError("the integration tests need root in CI")
    pytest.skip("the local provider needs root", allow_module_level=True)


def nspawn_pid(lab: "ScratchLab", host: str) -> int:
    """The systemd-nspawn process running a local-provider host (found in /proc by its root directory)."""
    merged = f"--directory={lab.state['resources']['hosts'][host]['root']}/merged"
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline[0].endswith(b"systemd-nspawn") and merged.encode() in cmdline:
            return int(proc.name)
    raise AssertionError(f"no systemd-nspawn runs {host}")


class LabCommandFailed(Exception):
    """A `lab` command that had to succeed exited non-zero; the message has its exit code, stderr and stdout."""


class ScratchLab:
    """A folder whose lab.toml gives the lab its own name and subnet; `lab` runs there with no LAB_* leaking in."""

    def __init__(self, folder: Path, name: str, subnet: str, provider: str | None = None,
                 extra_env: Mapping[str, str] | None = None, timeout: float = 900) -> None:
        self.folder = folder
        self.subnet = subnet
        self.timeout = timeout
        provider_line = f'provider = "{provider}"\n' if provider else ""
        (folder / "lab.toml").write_text(f'[lab]\nname = "{name}"\nsubnet = "{subnet}"\n{provider_line}')
        # LAB_* from the caller's shell would change the lab under test (name, subnet, web count).
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LAB_")} | dict(extra_env or {})
        self.seconds: dict[str, list[float]] = {}  # per verb: how long each call took, for a summary

    def command(self, *args: str) -> list[str]:
        """The command line of `lab ARGS` (for callers that start it themselves, to interrupt it)."""
        return [sys.executable, "-m", "lab", *args]

    def run(self, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        """`lab ARGS` in the lab's folder, whatever its exit code."""
        return self._timed_run(args, timeout)[1]

    def timed(self, *args: str, timeout: float | None = None) -> tuple[float, str]:
        """Seconds and stdout of `lab ARGS`, which must succeed (else LabCommandFailed)."""
        seconds, result = self._timed_run(args, timeout)
        if result.returncode != 0:
            raise LabCommandFailed(f"lab {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}\n"
                                   f"its output:\n{result.stdout}")
        return seconds, result.stdout

    def ok(self, *args: str, timeout: float | None = None) -> str:
        """stdout of `lab ARGS`, which must succeed (else LabCommandFailed)."""
        return self.timed(*args, timeout=timeout)[1]

    @property
    def state(self) -> dict[str, Any]:
        return json.loads((self.folder / ".lab" / "state.json").read_text())

    def site(self) -> tuple[str, urllib.request.OpenerDirector]:
        """The site's https URL (the balancer's, as `lab creds` gives it) and an opener that verifies it against the
        lab's own CA (`lab ca`) and never goes through a proxy."""
        url = next(line.split(None, 1)[1] for line in self.ok("creds").splitlines() if line.startswith("site:"))
        context = ssl.create_default_context(cafile=self.ok("ca").strip())
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
        return url.rstrip("/"), opener

    def _timed_run(self, args: tuple[str, ...], timeout: float | None) -> tuple[float, subprocess.CompletedProcess[str]]:
        started = time.perf_counter()
        result = subprocess.run(self.command(*args), cwd=self.folder, env=self.env, capture_output=True, text=True,
                                timeout=timeout or self.timeout, stdin=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        self.seconds.setdefault(args[0], []).append(round(seconds, 1))
        return seconds, result


# What a user's checkout needs to run `lab` (and `fab`): tests that edit app/ do it in a copy, never the project's own.
PROJECT_PARTS = ("lab", "provision", "app", "loadtests", "Vagrantfile.j2", "pyproject.toml", "fabfile.py", "fabric.yaml")


def copy_of_project(root: Path) -> Path:
    """root holding a copy of the project's PROJECT_PARTS (without caches), for a test to edit as a user would."""
    for part in PROJECT_PARTS:
        source = PROJECT_ROOT / part
        if source.is_dir():
            shutil.copytree(source, root / part, ignore=shutil.ignore_patterns("__pycache__", ".dev", ".pytest_cache"))
        else:
            shutil.copy2(source, root / part)
    return root


# A template every page of the site renders: what the deploy tests edit in their copy of the project, as a user edits
# app/ before `lab deploy` (the release is app/'s content hash, so any edit is a new release).
SITE_TEMPLATE = Path("app/accounts/templates/accounts/base.html")


def change_the_site(project: Path, text: str) -> None:
    """Append text (an HTML comment) to the site's base template in a copy of the project (copy_of_project)."""
    with open(project / SITE_TEMPLATE, "a") as template:
        template.write(text + "\n")


def current_release(lab: "ScratchLab", host: str) -> str:
    """The release `current` names on host."""
    return lab.ok("ssh", host, f"readlink {CURRENT}").strip().rsplit("/", 1)[-1]


def served_release(lab: "ScratchLab", host: str) -> str:
    """The release every process of the site's user runs in on host (their working directories): one name, or the
    names when they differ."""
    script = (f"for p in $(pgrep -u {APP_USER}); do readlink /proc/$p/cwd; done | sort -u | "
              f"sed 's|^{RELEASES}/||' | tr '\\n' ' '")
    return lab.ok("ssh", host, script).strip()


def lb_address(lab: "ScratchLab") -> str:
    """The site's address (the balancer's, or a balancer pair's floating one), from the lab's state."""
    return Topology.from_dict(lab.state["topology"]).site_address


def locust_while(lab: "ScratchLab", results: Path, action: Callable[[], Any], users: int, around_s: float,
                 limit_s: float) -> dict[str, Any]:
    """`action()` while Locust's SiteVisitor users hit lb1 over HTTPS, from around_s before it to around_s after;
    what Locust counted (successful and failed requests, its failures report), the action's result and seconds."""
    results.mkdir(parents=True)
    settings = BenchSettings(f"https://{lb_address(lab)}", users, users, limit_s,
                             PROJECT_ROOT / "loadtests" / "locustfile.py", results)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAB_")}
    env["LAB_CA_FILE"] = lab.ok("ca").strip()  # Locust verifies lb1 against the lab's own CA
    # A user waits as long as the balancer does (its proxy_read_timeout, the app server's own): a failure is an
    # answer the stack gave (an error, a reset, its 504), not a whole busy machine late by more than Locust's 15 s.
    env["LAB_CLIENT_TIMEOUT_S"] = str(REQUEST_TIMEOUT_S)
    with open(results / "locust.log", "w") as log:
        locust = subprocess.Popen([*locust_command(settings), "SiteVisitor"], cwd=results, env=env,
                                  stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            time.sleep(around_s)
            assert locust.poll() is None, (results / "locust.log").read_text()
            started = time.monotonic()
            result = action()
            seconds = time.monotonic() - started
            time.sleep(around_s)
        finally:
            locust.send_signal(signal.SIGTERM)  # Locust writes its final stats on SIGTERM
            locust.wait(60)
    total, _ = parse_stats_json(output_paths(results)["locust_json"])
    failures = output_paths(results)["csv_failures"]
    return {"requests": total.requests, "failures": total.failures, "result": result, "seconds": round(seconds, 1),
            "failure_report": failures.read_text() if failures.exists() else ""}


@contextmanager
def scratch_lab(name: str, thirds: range, folder: Path | None = None, provider: str | None = None,
                extra_env: Mapping[str, str] | None = None, timeout: float = 900, keep: bool = False) -> Iterator[ScratchLab]:
    """A ScratchLab on the first free 192.168.X.0/24 (X in thirds), destroyed on the way out unless keep.

    Without a folder it gets a temporary one, removed with the lab; a given folder (a test's) stays, logs and all.
    """
    owned = folder is None
    lab = ScratchLab(folder or Path(tempfile.mkdtemp(prefix=f"{name}-")), name, first_free_subnet(name, thirds),
                     provider, extra_env, timeout)
    try:
        yield lab
    finally:
        if not keep:
            # Whatever happened, leave nothing running; a destroy that fails is an error of its own (stop 19's CI left
            # a 13-host lab "destroying" with one host's root behind, and nothing said so). Its folder then stays.
            destroyed = lab.run("destroy")
            if destroyed.returncode != 0:
                raise LabCommandFailed(f"lab destroy exited {destroyed.returncode}: {destroyed.stderr.strip()}\n"
                                       f"its output:\n{destroyed.stdout}\nthe lab's folder: {lab.folder}")
            if owned:
                shutil.rmtree(lab.folder, ignore_errors=True)


def benchmark_main(run: Callable[[], None]) -> None:
    """Run a benchmark's main(): a lab command that fails ends it with that command's error, not a traceback."""
    try:
        run()
    except LabCommandFailed as failed:
        raise SystemExit(str(failed)) from None


def run_main(args: list[str], capfd: Any) -> tuple[int, str, str]:
    """main()'s exit code (0 when it returns), stdout and stderr, read through pytest's capfd; never a traceback."""
    try:
        main(args)
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def one_error_line(err: str) -> str:
    """The one `lab: error: ...` line stderr must be."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("lab: error: ")
    return lines[0]


def linux_topology(file_data: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None,
                   overrides: Overrides = Overrides()) -> Topology:
    """resolve() with an explicit (empty by default) environment, as on Linux, whatever machine runs the test."""
    return resolve(file_data or {}, environ or {}, overrides, platform="linux")


# -- the attendee's guide as a test: docs' runnable blocks ---------------------------------------------------------
# A fenced block whose info string is "console runnable" holds commands ("$ " lines) each followed by the lines its
# output must contain, in order; "…" in such a line stands for anything. "# exits N" after a command: its exit code
# (default 0). tests/test_integration_workshop.py runs every block of docs/steps/ against a real lab.
RUNNABLE_FENCE = "console runnable"
EXITS = re.compile(r"\s+#\s*exits\s+(\d+)\s*$")


@dataclass(frozen=True)
class DocCommand:
    """One command of a runnable block: where it is, what to run, the exit code and the output it must give."""

    source: str  # "docs/steps/1-bootstrap.md:37"
    command: str
    exit_code: int
    expected: tuple[str, ...]

    def mismatch(self, exit_code: int, output: str) -> str | None:
        """Why this command's run does not match the docs (None: it does)."""
        if exit_code != self.exit_code:
            return f"exited {exit_code}, the docs say {self.exit_code}"
        lines, at = output.splitlines(), 0
        for wanted in self.expected:
            pattern = re.compile(".*".join(map(re.escape, wanted.split("…"))))
            found = next((i for i in range(at, len(lines)) if pattern.search(lines[i])), None)
            if found is None:
                return f"no line {wanted!r} in its output (after line {at})"
            at = found + 1
        return None


def runnable_commands(path: Path, root: Path) -> list[DocCommand]:
    """Every command of the runnable blocks of one markdown file, in order."""
    commands: list[DocCommand] = []
    inside, current = False, None
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.startswith("```"):
            if inside and current:
                commands.append(current)
            inside, current = line[3:].strip() == RUNNABLE_FENCE, None
            continue
        if not inside or not line.strip():
            continue
        if line.startswith("$ "):
            if current:
                commands.append(current)
            exits = EXITS.search(line)
            command = EXITS.sub("", line[2:]).strip()
            current = DocCommand(f"{path.relative_to(root)}:{number}", command, int(exits.group(1)) if exits else 0, ())
        elif current is None:
            raise ValueError(f"{path.relative_to(root)}:{number}: output before any command in a runnable block")
        else:
            current = DocCommand(current.source, current.command, current.exit_code, (*current.expected, line.strip()))
    if inside:
        raise ValueError(f"{path.relative_to(root)}: a runnable block is not closed")
    return commands
