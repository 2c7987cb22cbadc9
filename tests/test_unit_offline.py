"""Unit tests for lab.offline: what `lab up --offline` needs, refused at once when missing; `lab cache export`/`import`
round trip on a fake cache (real tar); archives that are not lab's refused in one line."""
from __future__ import annotations

import io
import json
import os
import tarfile
import time
from pathlib import Path

import pytest

from lab import offline
from lab.errors import CacheArchiveError, LabBusy, OfflineMissing, UsageError
from lab.machine import wheels
from lab.providers.local import proxy
from lab.state import LabDir
from lab.testing import one_error_line, run_main
from lab.topology import Overrides, resolve


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    folder.mkdir()
    monkeypatch.setenv("LAB_CACHE_DIR", str(folder))
    return folder


def local(name: str = "lab"):
    return resolve({"lab": {"name": name}}, {}, Overrides(), platform="linux")


def fill(cache: Path, topology) -> None:
    """Every part whole, as a `lab up` with the network leaves them (small stand-ins for the real files)."""
    for part in offline.parts(topology):
        folder = cache / part.path
        folder.mkdir(parents=True, exist_ok=True)
        if part.kind == "wheels":
            for _, name, version in wheels.pins(offline.REQUIREMENTS.read_text()):
                (folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl").write_bytes(b"wheel " + name.encode())
        else:
            (folder / part.marker).write_text("whole\n")
            (folder / "content").write_text(f"{part.kind} of {topology.name}\n")


def test_a_local_lab_needs_its_root_filesystem_its_packages_and_the_wheels():
    kinds = {part.kind: part for part in offline.parts(local("lab"))}
    assert set(kinds) == {"rootfs", "packages", "wheels"}
    assert kinds["packages"].path == "squid/lab" and kinds["packages"].owner == "proxy:proxy"
    assert kinds["rootfs"].path.startswith("rootfs/bookworm-")


def test_offline_up_is_refused_at_once_naming_every_missing_part(cache):
    topology = local()
    started = time.monotonic()
    with pytest.raises(OfflineMissing) as caught:
        offline.require_offline(topology)
    message = str(caught.value)
    assert caught.value.exit_code == 75 and time.monotonic() - started < 2
    for what in ("root filesystem", "Debian packages", "wheels", "`lab cache import FILE`"):
        assert what in message
    fill(cache, topology)
    offline.require_offline(topology)
    one_wheel = next((cache / "wheels").glob("*.whl"))
    one_wheel.unlink()
    with pytest.raises(OfflineMissing, match=r"missing from .*: the site's pinned wheels \(wheels\);"):
        offline.require_offline(topology)


def test_offline_is_refused_for_a_provider_whose_hosts_fetch_their_own_packages(cache):
    vagrant = resolve({"lab": {"provider": "vagrant"}}, {}, Overrides(), platform="linux")
    with pytest.raises(UsageError, match="--offline works with the local provider"):
        offline.require_offline(vagrant)


def test_the_proxy_goes_offline_only_when_asked():
    args = ("lab", "10.0.0.1", "10.0.0.0/24", Path("/run/x"), Path("/cache/x"))
    assert "offline_mode" not in proxy.render_config(*args)
    offline_config = proxy.render_config(*args, offline=True)
    assert "offline_mode on\n" in offline_config and "never_direct allow all\n" in offline_config


def test_export_then_import_on_another_machine_gives_the_packages_to_its_own_lab(cache, tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("an import gives the proxy's files to the proxy user (root only)")
    fill(cache, local("lab"))
    (cache / "wheels" / ".lock").write_text("")
    (cache / "wheels" / ".partial-x").mkdir()  # an interrupted download's leftovers stay out of the archive
    archive = tmp_path / "lab-cache.tgz"
    said: list[str] = []
    manifest = offline.export(local("lab"), archive, said.append)
    assert manifest["lab_name"] == "lab" and {p["kind"] for p in manifest["parts"]} == {"rootfs", "packages", "wheels"}
    assert said[-1].startswith(f"wrote {archive} (")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert names[0] == offline.MANIFEST and not any(".partial" in n or n.endswith(".lock") for n in names)
    assert not list(tmp_path.glob(".*.partial"))

    other = tmp_path / "other-machine"
    other.mkdir()
    monkeypatch.setenv("LAB_CACHE_DIR", str(other))
    theirs = local("workshop")  # another folder's lab name: the packages become its own
    with pytest.raises(OfflineMissing):
        offline.require_offline(theirs)
    offline.import_archive(theirs, LabDir(tmp_path / "project" / ".lab"), archive, said.append)
    offline.require_offline(theirs)
    assert (other / "squid" / "workshop" / "content").read_text() == "packages of lab\n"
    assert (other / "squid" / "workshop").stat().st_uid != 0  # the proxy user's, as squid needs
    assert not list(other.glob(offline.STAGING_PREFIX + "*"))
    offline.import_archive(theirs, LabDir(tmp_path / "project" / ".lab"), archive, said.append)  # again: the same
    offline.require_offline(theirs)


def test_an_import_into_a_folder_whose_lab_exists_is_refused_before_anything_changes(cache, tmp_path):
    labdir = LabDir(tmp_path / ".lab")
    labdir.ensure()
    labdir.write(dict(labdir.new_state(local()), status="up"))
    fill(cache, local())
    archive = tmp_path / "a.tgz"
    offline.export(local(), archive, lambda message: None)
    with pytest.raises(LabBusy, match="`lab destroy` it before an import"):
        offline.import_archive(local(), labdir, archive, lambda message: None)


def member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize(("build", "needle"), [
    (lambda path: path.write_text("hello\n"), "not a tar file, gzip'd or not"),
    (lambda path: _tar(path, [("rootfs/x", b"")]), "does not begin with lab-cache.json"),
    (lambda path: _tar(path, [(offline.MANIFEST, b"{not json")]), "is not a lab cache archive"),
    (lambda path: _tar(path, [(offline.MANIFEST, json.dumps({"format": 9, "parts": []}).encode())]), "format 9, expected 1"),
    (lambda path: _tar(path, [(offline.MANIFEST, json.dumps({"format": 1, "parts": [
        {"kind": "rootfs", "what": "x", "path": "../../etc", "marker": "", "owner": ""}]}).encode())]), "outside the caches"),
])
def test_a_file_that_is_not_a_lab_cache_archive_is_refused_in_one_line(tmp_path, cache, build, needle):
    archive = tmp_path / "bad.tgz"
    build(archive)
    with pytest.raises(CacheArchiveError, match=needle) as caught:
        offline.import_archive(local(), LabDir(tmp_path / ".lab"), archive, lambda message: None)
    assert caught.value.exit_code == 76 and "\n" not in str(caught.value)
    assert not any(cache.iterdir())  # nothing placed


def _tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            member(tar, name, data)


def test_lab_up_offline_without_the_caches_exits_75_in_one_line_and_makes_nothing(no_lab, capfd, monkeypatch, tmp_path):
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path / "empty-cache"))
    code, out, err = run_main(["up", "--offline"], capfd)
    assert code == 75
    assert one_error_line(err).startswith("lab: error: --offline: missing from ")
    assert not (no_lab / ".lab").exists()
    code, out, err = run_main(["cache", "import", str(tmp_path / "nothing.tgz")], capfd)
    assert code == 2 and one_error_line(err).endswith("nothing.tgz: no such file")
    code, out, err = run_main(["cache", "export", str(tmp_path / "out.tgz")], capfd)
    assert code == 75 and "nothing to export yet" in one_error_line(err)


def test_a_damaged_archive_is_refused_and_nothing_of_it_is_placed(cache, tmp_path, monkeypatch):
    fill(cache, local())
    (cache / "rootfs" / next(p.name for p in (cache / "rootfs").iterdir()) / "big").write_bytes(os.urandom(1 << 20))
    archive = tmp_path / "a.tgz"
    offline.export(local(), archive, lambda message: None)
    cut = tmp_path / "cut.tgz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])  # a copy that stopped half way
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.setenv("LAB_CACHE_DIR", str(other))
    with pytest.raises(CacheArchiveError, match="is damaged or cut short: tar could not unpack it") as caught:
        offline.import_archive(local(), LabDir(tmp_path / ".lab"), cut, lambda message: None)
    assert caught.value.exit_code == 76 and "nothing of it was put in the caches" in str(caught.value)
    assert not list(other.iterdir())
