"""The offline round trip on a real lab, as a workshop without a network would do it: a lab comes up online, `lab cache
export` writes its archive; with an empty cache `lab up --offline` is refused at once; `lab cache import`, then
`lab up --offline` with the proxy's upstream blocked (nftables: the proxy user may reach the lab's subnet only)
comes up, proves itself with `lab test`, and the proxy answered every request from its cache."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from lab.testing import ScratchLab, needs_root, scratch_lab

NAME = os.environ.get("TEST_LAB_NAME", "laboff")
pytestmark = pytest.mark.integration

needs_root()

OFFLINE_MISSING, NOT_AN_ARCHIVE, BUSY = 75, 76, 8
REFUSED_WITHIN_S = 5  # "fails at once": no host made, no download tried
BLOCK_TABLE = "lab_offline_test"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScratchLab]:
    with scratch_lab(NAME, range(160, 170), folder=tmp_path_factory.mktemp("offline")) as the_lab:
        yield the_lab


@pytest.fixture(scope="module")
def empty_cache() -> Iterator[Path]:
    """Another machine's empty cache. Not under pytest's 0700 tmp: squid runs as `proxy` and must reach it."""
    folder = Path(tempfile.mkdtemp(prefix="lab-offline-cache-", dir="/var/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def upstream_blocked(subnet: str) -> Iterator[None]:
    """The lab proxy (user `proxy`) may send to the lab's subnet (and itself) only: the registries are out of reach."""
    rules = (f"table inet {BLOCK_TABLE} {{\n chain output {{\n  type filter hook output priority 0; policy accept;\n"
             # squid talks to its own helpers over loopback; everything else but the lab's subnet is refused
             f'  meta skuid "proxy" oif "lo" accept\n'
             f'  meta skuid "proxy" ip daddr != {subnet} counter reject\n'
             f'  meta skuid "proxy" meta nfproto ipv6 counter reject\n }}\n}}\n')
    subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True)
    try:
        yield
    finally:
        subprocess.run(["nft", "delete", "table", "inet", BLOCK_TABLE], check=False)


def test_export_wipe_import_then_up_offline_with_the_upstream_blocked(lab: ScratchLab, empty_cache: Path,
                                                                        tmp_path: Path) -> None:
    lab.ok("up")
    archive = tmp_path / "lab-cache.tgz"
    said = lab.ok("cache", "export", str(archive))
    assert "root filesystem" in said and "Debian packages" in said and "wheels" in said
    busy = lab.run("cache", "import", str(archive))  # into the caches of a lab that is up: refused
    assert busy.returncode == BUSY and "`lab destroy` it before an import" in busy.stderr
    lab.ok("destroy")

    lab.env = {**lab.env, "LAB_CACHE_DIR": str(empty_cache)}  # from here on: the other machine
    started = time.monotonic()
    refused = lab.run("up", "--offline")
    assert refused.returncode == OFFLINE_MISSING, refused.stderr
    assert time.monotonic() - started < REFUSED_WITHIN_S
    assert len(refused.stderr.strip().splitlines()) == 1
    for part in ("root filesystem", "Debian packages", "wheels"):
        assert part in refused.stderr
    assert not (lab.folder / ".lab" / "state.json").exists()  # nothing made
    not_ours = tmp_path / "notes.txt"
    not_ours.write_text("not an archive\n")
    assert lab.run("cache", "import", str(not_ours)).returncode == NOT_AN_ARCHIVE

    lab.ok("cache", "import", str(archive))
    with upstream_blocked(lab.subnet):
        said = lab.ok("up", "--offline")
        assert f"offline: everything comes from the caches in {empty_cache}" in said
        lab.ok("test")
        access_log = Path(lab.state["resources"]["proxy_run"]) / "access.log"
        lines = access_log.read_text().splitlines()
    fetched = [line for line in lines if "HIER_DIRECT" in line]
    assert not fetched, f"the proxy went to the registries offline: {fetched[:3]}"
    assert any("OFFLINE_HIT" in line or "MEM_HIT" in line for line in lines)  # the hosts' packages came from it
