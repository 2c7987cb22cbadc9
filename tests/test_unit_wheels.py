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


def tiny_sdist(folder: Path, name: str, version: str, tag: str = "py3-none-any") -> Path:
    """A source release whose in-tree build backend writes a minimal wheel tagged `tag` (no network: it needs nothing)."""
    import io
    import tarfile

    backend = (
        "import zipfile\n"
        f"NAME, VERSION, TAG = {name!r}, {version!r}, {tag!r}\n"
        "def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):\n"
        "    wheel = f'{NAME}-{VERSION}-{TAG}.whl'\n"
        "    info = f'{NAME}-{VERSION}.dist-info'\n"
        "    with zipfile.ZipFile(f'{wheel_directory}/{wheel}', 'w') as archive:\n"
        "        archive.writestr(f'{NAME}.py', '')\n"
        "        archive.writestr(f'{info}/METADATA', f'Metadata-Version: 2.1\\nName: {NAME}\\nVersion: {VERSION}\\n')\n"
        "        archive.writestr(f'{info}/WHEEL', f'Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: {TAG}\\n')\n"
        "        archive.writestr(f'{info}/RECORD', '')\n"
        "    return wheel\n"
        "def get_requires_for_build_wheel(config_settings=None):\n"
        "    return []\n"
    )
    files = {
        "pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n',
        "backend.py": backend,
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
    }
    sdist = folder / f"{name}-{version}.tar.gz"
    with tarfile.open(sdist, "w:gz") as archive:
        for path, text in files.items():
            info = tarfile.TarInfo(f"{name}-{version}/{path}")
            info.size = len(text.encode())
            archive.addfile(info, io.BytesIO(text.encode()))
    return sdist


def test_a_marked_pin_is_built_from_its_source_release_and_hashed_like_the_others(tmp_path):
    cache, index = tmp_path / "wheels", tmp_path / "index"
    index.mkdir()
    tiny_wheel(index, "fresh", "2.0")
    tiny_sdist(index, "sourceonly", "3.0")
    requirements = f"fresh==2.0\nsourceonly==3.0  # {wheels.BUILD_MARK}\n"
    assert wheels.built_here(requirements) == {"sourceonly"}
    wheels.ensure_wheels(requirements, cache, PIP, offline(index), offline(index))
    assert sorted(p.name for p in cache.glob("*.whl")) == ["fresh-2.0-py3-none-any.whl", "sourceonly-3.0-py3-none-any.whl"]
    assert "sourceonly==3.0 --hash=sha256:" in wheels.hashed_requirements(requirements, cache)
    # what a host installing from PyPI is sent: only the wheel PyPI does not have
    assert [p.name for p in wheels.built_wheels(requirements, cache)] == ["sourceonly-3.0-py3-none-any.whl"]


def test_a_marked_pin_that_builds_a_platform_wheel_is_refused(tmp_path):
    cache, index = tmp_path / "wheels", tmp_path / "index"
    index.mkdir()
    tiny_sdist(index, "compiled", "1.0", tag="cp311-cp311-linux_x86_64")
    with pytest.raises(wheels.WheelsUnavailable, match="not pure Python"):
        wheels.ensure_wheels(f"compiled==1.0  # {wheels.BUILD_MARK}\n", cache, PIP, offline(index), offline(index))
    assert not list(cache.glob("*.whl"))
