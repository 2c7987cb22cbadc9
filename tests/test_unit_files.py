"""Unit tests for lab.files.write_atomically: whole files, exact modes, nothing left beside them."""
from __future__ import annotations

import os
import stat

import pytest

from lab.files import TEMPORARY_SUFFIX, write_atomically


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_replaces_the_file_owner_only_by_default(tmp_path):
    path = tmp_path / "f"
    path.write_text("old")
    os.chmod(path, 0o644)
    write_atomically(path, "new")
    assert path.read_text() == "new"
    assert mode(path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


@pytest.mark.parametrize("fsync", [False, True])
@pytest.mark.parametrize("wanted", [0o644, 0o600, 0o755])
def test_the_file_gets_exactly_the_mode_asked_for(tmp_path, wanted, fsync):
    path = tmp_path / "f"
    old_umask = os.umask(0o077)  # a umask would take 0o644's read bits away from a file made with os.open alone
    try:
        write_atomically(path, b"\x00bytes", wanted, fsync=fsync)
    finally:
        os.umask(old_umask)
    assert path.read_bytes() == b"\x00bytes"
    assert mode(path) == wanted


def test_a_temporary_file_left_by_an_interrupted_write_is_reused_with_the_right_mode(tmp_path):
    path = tmp_path / "secrets.toml"
    leftover = tmp_path / ("secrets.toml" + TEMPORARY_SUFFIX)
    leftover.write_text("half of an earlier write, and more of it than the new one")
    os.chmod(leftover, 0o644)
    write_atomically(path, "whole")
    assert path.read_text() == "whole"
    assert mode(path) == 0o600  # O_CREAT alone would have kept the leftover's 0o644
    assert not leftover.exists()


def test_the_old_content_stays_when_the_write_fails(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("old")
    with pytest.raises(TypeError):
        write_atomically(path, None)  # type: ignore[arg-type]  # fails mid-write, after the temporary file is made
    assert path.read_text() == "old"
