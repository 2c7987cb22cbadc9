"""Unit tests for `lab destroy` removing only what lab made: a lab directory is recognised by its state file, and
a folder lab did not make (LAB_DIR=., a checkout, a folder of one's own) is refused in one line, nothing changed."""
from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import pytest

from lab import lifecycle, progress
from lab.errors import NotALabDir
from lab.state import LabDir
from lab.testing import linux_topology, one_error_line, run_main


def snapshot(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


@pytest.fixture
def checkout(tmp_path, monkeypatch) -> Path:
    """A folder lab did not make, as a checkout looks: lab.toml, code, a README."""
    for name, text in {"lab.toml": '[lab]\nname = "h4d"\n', "README.md": "# mine\n", "app/models.py": "x = 1\n"}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    for key in ("LAB_DIR", "LAB_NAME", "LAB_WEB", "LAB_PROVIDER"):
        monkeypatch.delenv(key, raising=False)
    return tmp_path


class RecordingProvider:
    def __init__(self) -> None:
        self.destroyed: list[str] = []

    def destroy(self, labdir, state, say) -> None:
        self.destroyed.append(state["name"])


@pytest.fixture
def provider(monkeypatch) -> RecordingProvider:
    made = RecordingProvider()
    monkeypatch.setattr(lifecycle, "get_provider", lambda name: made)
    return made


@pytest.mark.parametrize("verb", [["destroy"], ["up"]])
def test_lab_dir_dot_in_a_checkout_is_refused_and_nothing_changes(checkout, capfd, monkeypatch, provider, verb):
    monkeypatch.setenv("LAB_DIR", ".")
    before = snapshot(checkout)
    code, out, err = run_main(verb, capfd)
    assert code == NotALabDir.exit_code == 56
    line = one_error_line(err)
    assert f"{checkout} is not a lab directory" in line and "lab did not make" in line
    assert snapshot(checkout) == before
    assert provider.destroyed == []


def test_a_folder_of_ones_own_named_by_lab_dir_is_refused(checkout, capfd, monkeypatch, provider):
    mine = checkout / "photos"
    mine.mkdir()
    (mine / "cat.jpg").write_bytes(b"\xff\xd8")
    monkeypatch.setenv("LAB_DIR", str(mine))
    code, _, err = run_main(["destroy"], capfd)
    assert code == 56 and "cat.jpg" in one_error_line(err)
    assert (mine / "cat.jpg").exists()


def test_a_state_file_copied_into_a_checkout_does_not_make_it_a_lab(checkout, capfd, monkeypatch, provider):
    labdir = LabDir(checkout)
    (checkout / "state.json").write_text(json.dumps(labdir.new_state(linux_topology())))
    monkeypatch.setenv("LAB_DIR", ".")
    code, _, err = run_main(["destroy"], capfd)
    assert code == 56 and "lab.toml" in one_error_line(err)
    assert (checkout / "app/models.py").exists() and provider.destroyed == []


def test_a_lab_directory_is_recognised_by_its_state_file_and_destroyed(checkout, capfd, provider):
    labdir = LabDir(checkout / ".lab")
    labdir.ensure()
    labdir.write(labdir.new_state(linux_topology({"lab": {"name": "h4d"}})))
    labdir.ensure_key()
    labdir.secrets()
    (labdir.results / "run1").mkdir(parents=True)
    code, out, _ = run_main(["destroy"], capfd)
    assert code == 0 and "lab destroyed" in out
    assert provider.destroyed == ["h4d"]
    assert [p.name for p in labdir.path.iterdir()] == ["results"]  # measured results are kept
    assert (checkout / "README.md").exists()


def test_an_empty_or_missing_folder_has_nothing_to_destroy(checkout, capfd, monkeypatch, provider):
    (checkout / "empty").mkdir()
    for folder in ("empty", "missing"):
        monkeypatch.setenv("LAB_DIR", str(checkout / folder))
        code, out, err = run_main(["destroy"], capfd)
        assert code == 0 and "nothing to destroy" in out and err == ""
    assert not (checkout / "missing").exists()


def test_what_an_interrupted_first_up_left_is_lab_made(tmp_path):
    labdir = LabDir(tmp_path / ".lab")
    labdir.ensure()
    labdir.ensure_key()
    (labdir.path / "lock").write_text("")
    assert labdir.foreign_entries() == []
    labdir.ensure()  # lab goes on writing into its own folder


def test_a_long_destroy_says_it_is_still_removing_the_hosts(checkout, monkeypatch, provider):
    """A full lab's destroy took 43 s in a trial without a word: "still removing …" lines say it is working."""
    monkeypatch.setattr(lifecycle, "elapsed", functools.partial(progress.elapsed, every=0.05))
    monkeypatch.setattr(provider, "destroy", lambda labdir, state, say: time.sleep(0.3))
    labdir = LabDir(checkout / ".lab")
    labdir.ensure()
    labdir.write(labdir.new_state(linux_topology({"lab": {"name": "h4d"}})))
    said: list[str] = []
    assert lifecycle.destroy(lifecycle.Project.here(checkout), said.append)
    assert said and all(line.startswith("still removing the lab's 3 hosts, its network and its disks, ") for line in said)
