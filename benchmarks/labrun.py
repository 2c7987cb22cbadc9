"""A lab of a benchmark's own: its folder, lab.toml (own name and subnet) and timed `lab` commands; destroyed after."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lab.providers.local import network


class BenchLab:
    """Use as a context manager: the lab is destroyed and its folder removed on the way out, unless keep=True."""

    def __init__(self, name: str, thirds: range, provider: str | None = None, extra_env: dict[str, str] | None = None,
                 keep: bool = False) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        self.subnet = network.first_free_subnet(name, thirds)
        provider_line = f'provider = "{provider}"\n' if provider else ""
        (self.folder / "lab.toml").write_text(f'[lab]\nname = "{name}"\nsubnet = "{self.subnet}"\n{provider_line}')
        # LAB_* from the caller's shell would change the lab under test (name, subnet, web count).
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LAB_")} | (extra_env or {})
        self.keep = keep

    def timed(self, *args: str, timeout: float = 3600) -> tuple[float, str]:
        """Seconds and stdout of `lab ARGS`; a failed command ends the benchmark with its one-line error."""
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "lab", *args], cwd=self.folder, env=self.env, capture_output=True,
                                text=True, stdin=subprocess.DEVNULL, timeout=timeout)
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(f"lab {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return seconds, result.stdout

    def output(self, *args: str) -> str:
        return self.timed(*args)[1]

    def __enter__(self) -> "BenchLab":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.keep:
            return
        subprocess.run([sys.executable, "-m", "lab", "destroy"], cwd=self.folder, env=self.env, capture_output=True,
                       timeout=900)
        shutil.rmtree(self.folder, ignore_errors=True)
