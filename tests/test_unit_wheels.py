"""Unit tests for lab.machine.wheels: the machine fills its wheel cache whole, and hosts get the hashes of its wheels."""
from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from lab.machine import wheels

PIP = (sys.executable, "-m", "pip")


def tiny_wheel(folder: Path, name: str, version: str) -> Path:
    """A minimal valid wheel, so pip can be run for real without any network."""
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"{name}.py", "")
        archive.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        archive.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{info}/RECORD", "")
    return wheel


def offline(index: Path) -> tuple[str, ...]:
    return ("--no-index", "--find-links", str(index))


def test_pins_read_names_extras_and_versions_and_skip_the_rest():
    text = "# a comment\nDjango==5.2.19\npsycopg[binary]==3.3.9  # with extras\ntyping_extensions==4.16.0\n-e .\nloose>=1\n"
    assert wheels.pins(text) == [("Django==5.2.19", "django", "5.2.19"), ("psycopg[binary]==3.3.9", "psycopg", "3.3.9"),
                                 ("typing_extensions==4.16.0", "typing-extensions", "4.16.0")]


def test_ensure_wheels_adds_whole_wheels_and_clears_what_a_killed_download_left(tmp_path):
    cache, index = tmp_path / "wheels", tmp_path / "index"
    cache.mkdir(), index.mkdir()
    kept = tiny_wheel(cache, "kept", "1.0")
    new = tiny_wheel(index, "fresh", "2.0")
    (cache / ".partial-killed").mkdir()
    (cache / ".partial-killed" / new.name).write_bytes(b"PK half a wheel")  # a killed run's copy
    wheels.ensure_wheels("kept==1.0\nfresh==2.0\n", cache, PIP, offline(index))
    assert sorted(p.name for p in cache.iterdir() if p.name != ".lock") == sorted([kept.name, new.name])
    assert (cache / new.name).read_bytes() == new.read_bytes()


def test_ensure_wheels_runs_no_pip_when_every_wheel_is_there(tmp_path):
    tiny_wheel(tmp_path, "kept", "1.0")
    wheels.ensure_wheels("kept==1.0\n", tmp_path, ("false",), ())  # `false` as pip would fail if it ran


def test_a_failed_download_is_one_line_and_leaves_the_cache_as_it_was(tmp_path):
    cache = tmp_path / "wheels"
    with pytest.raises(wheels.WheelsUnavailable, match="pip download on the machine failed"):
        wheels.ensure_wheels("absent==1.0\n", cache, PIP, offline(tmp_path))
    assert [p.name for p in cache.iterdir()] == [".lock"]


def test_hashed_requirements_carry_each_wheels_sha256_and_pip_installs_only_those(tmp_path):
    cache = tmp_path / "wheels"
    cache.mkdir()
    wheel = tiny_wheel(cache, "kept", "1.0")
    hashed = wheels.hashed_requirements("kept==1.0\n", cache)
    assert f"kept==1.0 --hash=sha256:{hashlib.sha256(wheel.read_bytes()).hexdigest()}" in hashed.splitlines()
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(hashed)
    target = tmp_path / "target"
    install = [*PIP, "install", "-q", "--disable-pip-version-check", "--require-hashes", "--no-index", "--find-links",
               str(cache), "--target", str(target), "-r", str(requirements)]
    assert subprocess.run(install, capture_output=True, timeout=120).returncode == 0
    tiny_wheel(tmp_path, "kept", "1.0").replace(wheel)  # same name, other bytes (a zip's timestamps): a swapped wheel
    with zipfile.ZipFile(wheel, "a") as archive:
        archive.writestr("kept_extra.py", "print('not what the machine hashed')")
    refused = subprocess.run([*install, "--upgrade", "--force-reinstall"], capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "hash" in refused.stderr.lower()


def test_a_pin_without_a_wheel_is_an_error(tmp_path):
    with pytest.raises(wheels.WheelsUnavailable, match="no wheel of kept==1.0"):
        wheels.hashed_requirements("kept==1.0\n", tmp_path)
