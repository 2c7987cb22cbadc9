"""Running programs on the machine itself, and installing the machine packages lab needs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

from lab.errors import MissingDependency, NeedsRoot, ProviderError
from lab.progress import elapsed

Say = Callable[[str], None]


def run(args: Sequence[str], *, check: bool = True, input: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run a machine command; a failure becomes a one-line ProviderError naming the command."""
    try:
        result = subprocess.run(
            list(args), capture_output=True, text=True, input=input, timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise MissingDependency(f"{args[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise ProviderError(f"`{' '.join(args)}` did not finish within {timeout:.0f} s") from None
    if check and result.returncode != 0:
        raise ProviderError(f"`{' '.join(args)}` failed (exit {result.returncode}): {gist(result.stderr or result.stdout)}")
    return result


def gist(output: str) -> str:
    """The line of a command's output most worth showing: its first error, else its last real line."""
    lines = [l.strip() for l in output.splitlines() if re.search(r"[A-Za-z0-9]", l)]
    for line in lines:
        if re.search(r"error|fatal|denied|not permitted|no such|cannot|unable", line, re.IGNORECASE):
            return line
    return lines[-1] if lines else "no output"


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise NeedsRoot(f"{what} must run as root (try: sudo lab ...)")


def missing_packages(packages: dict[str, str]) -> list[str]:
    """The Debian packages whose proof is missing; packages maps what proves a package is there → the package.

    A proof is a program (on PATH or in /usr/sbin, /sbin), an absolute path, or python3:MODULE (a module the
    machine's python3 imports): the forms lab/machine-packages.toml uses.
    """
    return sorted({package for proof, package in packages.items() if not _have(proof)})


def ensure_debian_packages(packages: dict[str, str], say: Say) -> None:
    """Install, without their Recommends, the Debian packages whose proof is missing (see missing_packages).

    Callers pass a feature's packages from lab/machine-packages.toml (lab.machine_packages.ensure_feature).
    """
    missing = missing_packages(packages)
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise MissingDependency(f"lab needs {', '.join(missing)} and cannot install them here (no apt-get)")
    say(f"installing machine packages: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    with elapsed(say, "installing machine packages", "installed machine packages"), _services_held_back():
        result = _apt_install(missing, env)
        if result.returncode != 0:
            raise MissingDependency(f"could not install {' '.join(missing)}: {gist(result.stderr or result.stdout)}")
    still = [program for program in packages if not _have(program)]
    if still:
        raise MissingDependency(f"installed {' '.join(missing)} but still cannot find {', '.join(still)}")


@contextmanager
def _services_held_back() -> Iterator[None]:
    """Keep packaged services (squid would listen machine-wide on 3128) from starting when installed."""
    policy = Path("/usr/sbin/policy-rc.d")
    if policy.exists():
        yield
        return
    policy.write_text("#!/bin/sh\n# lab: installing packages; their services stay stopped\nexit 101\n")
    policy.chmod(0o755)
    try:
        yield
    finally:
        policy.unlink(missing_ok=True)


def _apt_install(missing: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    for attempt in ("install", "update-then-install"):
        if attempt == "update-then-install":
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, stdin=subprocess.DEVNULL)
        result = subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
            env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
        )
        if result.returncode == 0:
            break
    return result


def _have(program: str) -> bool:
    if program.startswith("python3:"):
        python3 = shutil.which("python3")
        module = program.removeprefix("python3:")
        return python3 is not None and subprocess.run(
            [python3, "-c", f"import {module}"], capture_output=True, stdin=subprocess.DEVNULL
        ).returncode == 0
    if program.startswith("/"):
        return os.path.exists(program)
    return shutil.which(program) is not None or any(
        os.path.exists(os.path.join(d, program)) for d in ("/usr/sbin", "/sbin")
    )


def available_memory_mb(meminfo: Path = Path("/proc/meminfo")) -> int:
    """What the kernel says the machine can give new programs without swapping (MemAvailable), in MB."""
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    raise ProviderError(f"{meminfo} says nothing of MemAvailable")
