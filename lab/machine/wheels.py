"""The machine's wheel cache: the site's pinned wheels downloaded once, on the machine, and their sha256 hashes, so
hosts install with `pip --require-hashes` from a cache they can only read (a host cannot poison another's install)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Sequence

from lab.machine.paths import cache_root

# The hosts' Python: Debian 12's CPython 3.11 on x86_64 (as app/requirements.txt promises, every pin has such a wheel).
HOST_PLATFORM = (
    "--only-binary=:all:", "--implementation", "cp", "--python-version", "3.11", "--abi", "cp311",
    "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux_2_28_x86_64",
)
# A pin whose release is pure Python but has no wheel on PyPI (only its source) carries this in its line's comment:
# the machine builds that wheel itself, once (`pip wheel --no-deps`), and keeps it only if it is py3-none-any; hosts
# then install it by its hash like any downloaded wheel.
BUILD_MARK = "lab: build the pure-Python wheel"
_in_process = threading.Lock()  # recipes of several hosts run in threads of one process; flock guards other processes


class WheelsUnavailable(Exception):
    """The machine could not download a pinned requirement's wheel."""


def wheel_cache() -> Path:
    """The machine-wide wheel cache (the local provider mounts it read-only into its hosts)."""
    return cache_root() / "wheels"


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(requirements: str) -> list[tuple[str, str, str]]:
    """(requirement as written without comment, normalized name, version) for each `name==version` line."""
    found = []
    for line in requirements.splitlines():
        spec = line.split("#", 1)[0].strip()
        match = re.match(r"^([A-Za-z0-9_.-]+)(\[[^]]*\])?==([^\s;]+)$", spec)
        if match:
            found.append((spec, normalized(match.group(1)), match.group(3)))
    return found


def built_here(requirements: str) -> set[str]:
    """The normalized names of the pins marked BUILD_MARK (built on the machine from their source release)."""
    marked = "\n".join(line for line in requirements.splitlines() if BUILD_MARK in line.partition("#")[2])
    return {name for _, name, _ in pins(marked)}


def built_wheels(requirements: str, folder: Path) -> list[Path]:
    """The wheels in the folder of the pins marked BUILD_MARK: a host that installs from PyPI needs them sent, as
    PyPI has only their source, and pip would build a wheel of another hash from it."""
    return [wheel for _, name, version in pins(requirements) if name in built_here(requirements)
            for wheel in wheels_of(folder, name, version)]


def wheels_of(folder: Path, name: str, version: str) -> list[Path]:
    """The wheels of one pinned distribution in the folder (a wheel's name: {dist}-{version}-{tags}.whl)."""
    return sorted(p for p in folder.glob("*.whl")
                  if [normalized(part) for part in p.name.split("-")[:2]] == [name, normalized(version)])


def ensure_wheels(requirements: str, folder: Path | None = None, pip: Sequence[str] = (sys.executable, "-m", "pip"),
                  extra: Sequence[str] = HOST_PLATFORM, build_extra: Sequence[str] = ()) -> Path:
    """Every pinned requirement's wheel in the folder, downloaded on the machine if missing (built from its source
    release when its line is marked BUILD_MARK); returns the folder.

    pip trusts a file it finds in --dest: it downloads into a fresh folder of this run's own, and whole wheels are
    renamed in, so a killed download never leaves half a wheel in the cache.
    """
    folder = folder or wheel_cache()
    wanted = pins(requirements)
    if all(wheels_of(folder, name, version) for _, name, version in wanted):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    with _in_process, open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for leftover in folder.glob(".partial-*"):  # what a killed run left
            shutil.rmtree(leftover, ignore_errors=True)
        partial = Path(tempfile.mkdtemp(dir=folder, prefix=".partial-"))
        try:
            build = built_here(requirements)
            downloaded = "\n".join(line for line in requirements.splitlines()
                                   if not {name for _, name, _ in pins(line)} & build)
            with tempfile.NamedTemporaryFile("w", suffix=".txt") as listing:
                listing.write(downloaded)
                listing.flush()
                _pip(pip, "download", "--dest", str(partial), "--find-links", str(folder), *extra, "-r", listing.name)
            for spec, name, version in pins(requirements):
                if name in build and not wheels_of(folder, name, version):
                    _pip(pip, "wheel", "--no-deps", "--no-binary", name, "--wheel-dir", str(partial), *build_extra, spec)
                    if not all(w.name.endswith("-py3-none-any.whl") for w in wheels_of(partial, name, version)):
                        raise WheelsUnavailable(f"{spec} built a wheel that is not pure Python")
            for wheel in partial.glob("*.whl"):
                if not (folder / wheel.name).exists():
                    wheel.chmod(0o644)
                    os.replace(wheel, folder / wheel.name)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return folder


def _pip(pip: Sequence[str], verb: str, *args: str) -> None:
    done = subprocess.run([*pip, verb, "-q", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=900)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip() and "WARNING" not in line]
        raise WheelsUnavailable(f"pip {verb} on the machine failed: {(lines or ['no output'])[-1].strip()}")


def hashed_requirements(requirements: str, folder: Path) -> str:
    """The requirements with `--hash=sha256:...` of every wheel of each pin found in the folder, for
    `pip install --require-hashes`; a pin without a wheel there is an error."""
    lines = ["# written by lab: the site's pins with the hashes of the wheels the machine downloaded"]
    for spec, name, version in pins(requirements):
        wheels = wheels_of(folder, name, version)
        if not wheels:
            raise WheelsUnavailable(f"no wheel of {spec} in {folder}")
        hashes = " ".join(f"--hash=sha256:{hashlib.sha256(w.read_bytes()).hexdigest()}" for w in wheels)
        lines.append(f"{spec} {hashes}")
    return "\n".join(lines) + "\n"
