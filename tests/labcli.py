"""The `lab` command line as tests drive it: in a child process in a folder of its own, or in process through main()."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from lab.cli import main


class LabCli:
    """Writes a lab.toml with its own name and subnet, then runs `python -m lab ...` there with no LAB_* leaking in."""

    def __init__(self, folder: Path, name: str, subnet: str, provider: str | None = None, timeout: float = 900) -> None:
        self.folder = folder
        self.subnet = subnet
        self.timeout = timeout
        provider_line = f'provider = "{provider}"\n' if provider else ""
        (folder / "lab.toml").write_text(f'[lab]\nname = "{name}"\nsubnet = "{subnet}"\n{provider_line}')
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LAB_")}
        self.seconds: dict[str, list[float]] = {}  # per verb: how long each call took, for the test's summary

    def run(self, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "lab", *args], cwd=self.folder, env=self.env, capture_output=True,
                                text=True, timeout=timeout or self.timeout, stdin=subprocess.DEVNULL)
        self.seconds.setdefault(args[0], []).append(round(time.monotonic() - started, 1))
        return result

    def ok(self, *args: str, timeout: float | None = None) -> str:
        result = self.run(*args, timeout=timeout)
        assert result.returncode == 0, f"lab {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    @property
    def state(self) -> dict:
        return json.loads((self.folder / ".lab" / "state.json").read_text())


def run_main(args: list[str], capfd) -> tuple[int, str, str]:
    """main()'s exit code (0 when it returns), stdout and stderr; never a traceback."""
    try:
        main(args)
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("lab: error: ")
    return lines[0]
