"""Unit tests for lab.testing's scratch lab, the runner of the integration tests and benchmarks (no lab is brought up)."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from lab.testing import LabCommandFailed, ScratchLab, benchmark_main, scratch_lab


def test_a_scratch_lab_has_its_own_settings_and_none_from_outside(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_WEB", "7")
    lab = ScratchLab(tmp_path, "labunit", "192.168.170.0/24", provider="vagrant", extra_env={"LAB_CACHE_DIR": "/c"})
    assert (tmp_path / "lab.toml").read_text() == '[lab]\nname = "labunit"\nsubnet = "192.168.170.0/24"\nprovider = "vagrant"\n'
    assert "LAB_WEB" not in lab.env and lab.env["LAB_CACHE_DIR"] == "/c"
    assert lab.command("up", "--web=2")[-3:] == ["lab", "up", "--web=2"]


def test_ok_returns_stdout_and_a_failure_names_the_command_and_its_error(tmp_path):
    lab = ScratchLab(tmp_path, "labunit", "192.168.170.0/24")
    assert "lab" in lab.ok("--version")
    assert lab.run("frobnicate").returncode == 2
    with pytest.raises(LabCommandFailed, match=r"^lab frobnicate exited 2: lab: error: ") as caught:
        lab.ok("frobnicate")
    assert list(lab.seconds) == ["--version", "frobnicate"] and len(lab.seconds["frobnicate"]) == 2

    def benchmark() -> None:
        raise caught.value

    with pytest.raises(SystemExit) as ended:
        benchmark_main(benchmark)
    assert str(ended.value.code).startswith("lab frobnicate exited 2")


def test_scratch_lab_destroys_its_lab_and_removes_its_own_folder(tmp_path):
    with scratch_lab("labunit", range(170, 180)) as lab:
        folder = lab.folder
        assert lab.subnet.startswith("192.168.17") and (folder / "lab.toml").is_file()
    assert lab.seconds["destroy"] and not folder.exists()
    with scratch_lab("labunit", range(170, 180), folder=tmp_path) as lab:
        pass
    assert lab.seconds["destroy"] and (tmp_path / "lab.toml").is_file()  # a folder it was given stays


def test_a_destroy_that_fails_is_an_error_and_the_folder_stays(monkeypatch):
    def failing_destroy(self, *args, timeout=None):
        return subprocess.CompletedProcess(["lab", *args], 1, "lab: removing hosts\n", "lab: error: umount: busy")

    monkeypatch.setattr(ScratchLab, "run", failing_destroy)
    with pytest.raises(LabCommandFailed, match=r"^lab destroy exited 1: lab: error: umount: busy") as caught:
        with scratch_lab("labunit", range(170, 180)) as lab:
            folder = lab.folder
    assert folder.is_dir() and str(folder) in str(caught.value)  # its logs are kept for whoever reads the error
    shutil.rmtree(folder)
