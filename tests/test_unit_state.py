"""Unit tests for lab.state.LabDir: the state file's fixed keys, secrets, the SSH key, the lock and removal."""
from __future__ import annotations

import fcntl
import json
import stat
import subprocess
import tomllib

import pytest

from lab.errors import LabBusy, NotUp, ProviderError
from lab.state import SECRET_NAMES, STATE_KEYS, STATE_VERSION, LabDir


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def labdir(tmp_path) -> LabDir:
    return LabDir(tmp_path / ".lab")


# -- state file -------------------------------------------------------------------------------


def test_new_state_has_exactly_the_state_keys(labdir, topology):
    state = labdir.new_state(topology)
    assert sorted(state) == sorted(STATE_KEYS)
    assert state["status"] == "creating"
    assert state["provider"] == "local"
    assert state["topology"] == topology.to_dict()


def test_write_then_read_round_trips_and_stamps_updated_at(labdir, topology):
    labdir.ensure()
    state = labdir.new_state(topology)
    state["updated_at"] = "1970-01-01T00:00:00Z"
    state["status"] = "up"
    labdir.write(state)
    assert labdir.exists()
    assert mode(labdir.state_file) == 0o600
    back = labdir.read()
    assert back["status"] == "up"
    assert back["updated_at"] != "1970-01-01T00:00:00Z"
    assert {k: v for k, v in back.items() if k != "updated_at"} == {k: v for k, v in state.items() if k != "updated_at"}
    assert labdir.topology() == topology
    assert not (labdir.path / "state.json.tmp").exists()


@pytest.mark.parametrize("key", ["version", "status", "topology", "updated_at"])
def test_write_refuses_missing_keys(labdir, topology, key):
    labdir.ensure()
    state = labdir.new_state(topology)
    del state[key]
    with pytest.raises(ValueError, match="bad state") as caught:
        labdir.write(state)
    assert key in str(caught.value)
    assert not labdir.state_file.exists()


def test_write_refuses_extra_keys(labdir, topology):
    labdir.ensure()
    state = dict(labdir.new_state(topology), surprise=1)
    with pytest.raises(ValueError, match="surprise"):
        labdir.write(state)
    assert not labdir.state_file.exists()


@pytest.mark.parametrize("status", ["running", "", None, "UP"])
def test_write_refuses_bad_status(labdir, topology, status):
    labdir.ensure()
    state = dict(labdir.new_state(topology), status=status)
    with pytest.raises(ValueError, match="status"):
        labdir.write(state)
    assert not labdir.state_file.exists()


@pytest.mark.parametrize("status", ["creating", "up", "destroying"])
def test_write_accepts_every_status(labdir, topology, status):
    labdir.ensure()
    labdir.write(dict(labdir.new_state(topology), status=status))
    assert labdir.read()["status"] == status


def test_read_of_missing_lab_raises_not_up(labdir):
    with pytest.raises(NotUp) as caught:
        labdir.read()
    assert str(labdir.path) in str(caught.value)
    assert "lab up" in str(caught.value)
    assert caught.value.exit_code == 7
    assert not labdir.exists()


def test_read_of_corrupt_state_raises_provider_error(labdir):
    labdir.ensure()
    labdir.state_file.write_text("{not json")
    with pytest.raises(ProviderError, match="unreadable"):
        labdir.read()


def test_new_state_remembers_no_choices_unless_given(labdir, topology):
    assert labdir.new_state(topology)["choices"] == {}
    assert labdir.new_state(topology, {"web": 2})["choices"] == {"web": 2}
    assert labdir.new_state(topology)["version"] == STATE_VERSION == 2


def test_choices_round_trip_through_the_state_file(labdir, topology):
    labdir.ensure()
    labdir.write(labdir.new_state(topology, {"web": 2, "app_server": "mod_wsgi", "counts.lb": 2}))
    assert labdir.read()["choices"] == {"web": 2, "app_server": "mod_wsgi", "counts.lb": 2}


def version_1_state(labdir, topology) -> dict:
    """A state file as lab wrote it before it remembered choices."""
    old = {key: value for key, value in labdir.new_state(topology).items() if key != "choices"}
    return dict(old, version=1, status="up")


def test_a_version_1_state_file_is_read_with_choices_not_recorded(labdir, topology):
    labdir.ensure()
    old = version_1_state(labdir, topology)
    labdir.state_file.write_text(json.dumps(old))
    state = labdir.read()
    assert state["choices"] is None and state["version"] == STATE_VERSION
    assert {k: v for k, v in state.items() if k not in ("choices", "version")} == {k: v for k, v in old.items() if k != "version"}
    assert labdir.topology() == topology
    labdir.write(state)  # written back as the current version, still "not recorded" until `lab up` decides
    assert json.loads(labdir.state_file.read_text())["version"] == STATE_VERSION
    assert labdir.read()["choices"] is None


@pytest.mark.parametrize("change", [{"version": 3}, {"version": 3, "choices": {}}, {"version": 1, "choices": {}},
                                    {"version": 2}])
def test_read_of_state_from_another_version_raises_provider_error(labdir, topology, change):
    labdir.ensure()
    labdir.state_file.write_text(json.dumps(dict(version_1_state(labdir, topology), **change)))
    with pytest.raises(ProviderError, match="another version of lab"):
        labdir.read()


def test_read_of_state_that_is_not_an_object_raises_provider_error(labdir):
    labdir.ensure()
    labdir.state_file.write_text("[1, 2]")
    with pytest.raises(ProviderError, match="another version of lab"):
        labdir.read()


def test_read_of_state_with_other_keys_raises_provider_error(labdir):
    labdir.ensure()
    labdir.state_file.write_text(json.dumps({"version": 1, "name": "lab"}))
    with pytest.raises(ProviderError, match="unexpected keys"):
        labdir.read()


# -- secrets ------------------------------------------------------------------------------------


def test_secrets_are_generated_once_and_kept_private(labdir):
    first = labdir.secrets()
    assert set(first) == set(SECRET_NAMES)
    assert all(isinstance(v, str) and len(v) >= 24 for v in first.values())
    assert len(set(first.values())) == len(SECRET_NAMES)  # every secret its own
    assert mode(labdir.secrets_file) == 0o600
    assert tomllib.loads(labdir.secrets_file.read_text()) == first
    before = labdir.secrets_file.stat().st_mtime_ns
    assert labdir.secrets() == first
    assert labdir.secrets_file.stat().st_mtime_ns == before  # not rewritten


def test_secrets_differ_between_labs(tmp_path):
    assert LabDir(tmp_path / "a").secrets() != LabDir(tmp_path / "b").secrets()


def test_secrets_keep_existing_values_and_add_missing_ones(labdir):
    labdir.ensure()
    labdir.secrets_file.write_text('db_password = "kept"\n')
    values = labdir.secrets()
    assert values["db_password"] == "kept"
    assert set(values) == set(SECRET_NAMES)
    assert mode(labdir.secrets_file) == 0o600
    assert labdir.secrets() == values


# -- SSH key ------------------------------------------------------------------------------------


def test_ensure_key_makes_a_private_key_and_returns_the_public_key(labdir):
    public = labdir.ensure_key()
    assert public.startswith("ssh-ed25519 ")
    assert public.endswith(f"lab@{labdir.path}")
    assert mode(labdir.private_key) == 0o600
    assert labdir.private_key.with_suffix(".pub").read_text().strip() == public
    derived = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(labdir.private_key)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert derived[:2] == public.split()[:2]  # the pair belongs together
    assert not list(labdir.path.glob("*.tmp*"))


def test_ensure_key_is_made_once(labdir):
    public = labdir.ensure_key()
    private = labdir.private_key.read_bytes()
    assert labdir.ensure_key() == public
    assert labdir.private_key.read_bytes() == private


# -- lock ---------------------------------------------------------------------------------------


def test_locked_raises_lab_busy_while_another_fd_holds_the_lock(labdir):
    labdir.ensure()
    with open(labdir.path / "lock", "w") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(LabBusy) as caught:
            with labdir.locked():
                pytest.fail("entered the lock while another holder had it")
        assert str(labdir.path) in str(caught.value)
        assert caught.value.exit_code == 8
        fcntl.flock(other, fcntl.LOCK_UN)
    with labdir.locked():
        pass


def test_locked_raises_lab_busy_even_against_a_shared_lock(labdir):
    labdir.ensure()
    with open(labdir.path / "lock", "w") as other:
        fcntl.flock(other, fcntl.LOCK_SH | fcntl.LOCK_NB)
        with pytest.raises(LabBusy):
            with labdir.locked():
                pass


def test_two_locked_sections_on_one_lab_exclude_each_other(labdir):
    with labdir.locked():
        with pytest.raises(LabBusy):
            with LabDir(labdir.path).locked():
                pass


def test_locked_holds_the_lock_and_releases_it(labdir):
    with labdir.locked():
        with open(labdir.path / "lock", "w") as other:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(labdir.path / "lock", "w") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again


def test_locked_creates_the_lab_directory_private(labdir):
    with labdir.locked():
        assert labdir.path.is_dir()
        assert labdir.logs.is_dir()
    assert mode(labdir.path) == 0o700


# -- remove -------------------------------------------------------------------------------------


def populate(labdir: LabDir, topology) -> None:
    labdir.ensure()
    labdir.write(labdir.new_state(topology))
    labdir.secrets()
    (labdir.logs / "up.log").write_text("log")
    labdir.results.mkdir()
    (labdir.results / "run1.json").write_text("{}")
    (labdir.path / "link").symlink_to(labdir.results)


def test_remove_keeps_results(labdir, topology):
    populate(labdir, topology)
    labdir.remove(keep_results=True)
    assert sorted(p.name for p in labdir.path.iterdir()) == ["results"]
    assert (labdir.results / "run1.json").read_text() == "{}"
    assert not labdir.exists()


def test_remove_without_results_removes_the_directory(labdir, topology):
    populate(labdir, topology)
    labdir.remove(keep_results=False)
    assert not labdir.path.exists()


def test_remove_with_no_results_removes_the_directory(labdir, topology):
    labdir.ensure()
    labdir.write(labdir.new_state(topology))
    labdir.remove(keep_results=True)
    assert not labdir.path.exists()


def test_remove_of_missing_lab_is_a_no_op(labdir):
    labdir.remove()
    assert not labdir.path.exists()
