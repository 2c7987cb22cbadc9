"""Labs without the network: one archive of what `lab up` fetches (`lab cache export`/`import`), and the check that
`lab up --offline` finds all of it in the machine's caches before anything is made."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
import time
from dataclasses import asdict, fields
from pathlib import Path

from lab.errors import CacheArchiveError, LabBusy, OfflineMissing, ProviderError, UsageError, one_line
from lab.machine import wheels
from lab.machine.paths import cache_root
from lab.progress import elapsed
from lab.recipes import PROJECT_ROOT
from lab.providers import get_provider
from lab.providers.base import CachePart
from lab.state import LabDir
from lab.system import Say, run
from lab.topology import Topology

ARCHIVE_FORMAT = 1
MANIFEST = "lab-cache.json"  # the archive's first member: what it holds and for which lab
# The site's pins: the wheels every web host installs (provision/step1_bootstrap reads the same file).
REQUIREMENTS = PROJECT_ROOT / "app" / "requirements.txt"
WHEELS = CachePart("wheels", "the site's pinned wheels", "wheels", "")
STAGING_PREFIX = ".import-"  # an import unpacks beside the caches (same filesystem: moved in by rename)
# A gzip of level 1: the root filesystem halves, at disk speed; the archive is read back by any tar.
COMPRESS = "gzip -1"


def parts(topology: Topology) -> list[CachePart]:
    """Everything a `lab up` of topology fetches from the network once: the provider's parts and the site's wheels."""
    return [*get_provider(topology.provider).cache_parts(topology), WHEELS]


def missing(topology: Topology, root: Path | None = None) -> list[CachePart]:
    """The parts not (wholly) in the caches under root."""
    root = root or cache_root()
    return [part for part in parts(topology) if not _whole(part, root)]


def _whole(part: CachePart, root: Path) -> bool:
    if part.kind == WHEELS.kind:
        pinned = wheels.pins(REQUIREMENTS.read_text())
        return all(wheels.wheels_of(root / part.path, name, version) for _, name, version in pinned)
    return (root / part.path / part.marker).exists()


def _named(lacking: list[CachePart]) -> str:
    return "; ".join(f"{part.what} ({part.path})" for part in lacking)


def require_offline(topology: Topology) -> None:
    """Refuse `lab up --offline` at once, naming every missing part, unless the caches hold all of it."""
    if not any(part.kind == "packages" for part in parts(topology)):
        raise UsageError(f"the {topology.provider} provider's hosts download their packages themselves, not through "
                         "lab's cache: --offline works with the local provider")
    lacking = missing(topology)
    if lacking:
        raise OfflineMissing(f"--offline: missing from {cache_root()}: {_named(lacking)}; `lab cache import FILE` "
                             "brings them (an archive `lab cache export FILE` wrote where this lab came up online)")


def export(topology: Topology, file: Path, say: Say) -> dict:
    """Write one archive of every part topology's `lab up` needs; returns its manifest."""
    root = cache_root()
    lacking = missing(topology, root)
    if lacking:
        raise OfflineMissing(f"nothing to export yet: missing from {root}: {_named(lacking)}; run `lab up` here once "
                             "with the network (`lab up --preset full` covers every preset)")
    file = file.absolute()
    if file.is_dir() or not file.parent.is_dir():
        raise UsageError(f"{file}: not a file in an existing folder")
    included = parts(topology)
    manifest = {
        "format": ARCHIVE_FORMAT, "made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "lab_name": topology.name, "provider": topology.provider, "parts": [asdict(part) for part in included],
    }
    partial = file.with_name(f".{file.name}.partial")
    try:
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            # The manifest first, so an import reads it without unpacking the rest; what an interrupted
            # download left in the wheel cache (and its lock) stays out.
            with elapsed(say, f"writing {file}", f"wrote {file.name}"):
                run(["tar", "--create", "--file", str(partial), "--use-compress-program", COMPRESS,
                     "--numeric-owner", "--exclude", f"{WHEELS.path}/.partial-*", "--exclude", f"{WHEELS.path}/.lock",
                     "-C", folder, MANIFEST, "-C", str(root), *(part.path for part in included)], timeout=1800)
        os.replace(partial, file)
    finally:
        partial.unlink(missing_ok=True)
    say(f"wrote {file} ({file.stat().st_size / 2**20:,.0f} MiB): {', '.join(part.what for part in included)}")
    return manifest


def read_manifest(file: Path) -> dict:
    """The archive's manifest, checked; CacheArchiveError if the file is not an archive `lab cache export` wrote."""
    try:
        with tarfile.open(file, "r:*") as archive:
            first = archive.next()
            if first is None or first.name != MANIFEST or not first.isfile():
                raise CacheArchiveError(f"{file} is not a lab cache archive: it does not begin with {MANIFEST} "
                                        "(`lab cache export FILE` writes one)")
            manifest = json.loads(archive.extractfile(first).read())  # type: ignore[union-attr]
    except tarfile.ReadError:
        raise CacheArchiveError(f"{file} is not a lab cache archive: not a tar file, gzip'd or not") from None
    except (OSError, tarfile.TarError, EOFError, ValueError) as error:
        raise CacheArchiveError(f"{file} is not a lab cache archive: {one_line(error)}") from None
    known = {item.name for item in fields(CachePart)}
    entries = manifest.get("parts") if isinstance(manifest, dict) else None
    if (not isinstance(manifest, dict) or manifest.get("format") != ARCHIVE_FORMAT or not isinstance(entries, list)
            or not all(isinstance(entry, dict) and set(entry) == known for entry in entries)):
        raise CacheArchiveError(f"{file}: its {MANIFEST} is not one this version of lab reads (format "
                                f"{manifest.get('format') if isinstance(manifest, dict) else '?'}, expected {ARCHIVE_FORMAT})")
    for entry in entries:
        path = Path(entry["path"])
        if path.is_absolute() or ".." in path.parts or not path.parts:
            raise CacheArchiveError(f"{file}: its {MANIFEST} names a part outside the caches: {entry['path']!r}")
    return manifest


def import_archive(topology: Topology, labdir: LabDir, file: Path, say: Say) -> None:
    """Put an archive's parts into this machine's caches, the lab proxy's package cache as this lab's own."""
    if not file.is_file():
        raise UsageError(f"{file}: no such file")
    if labdir.exists():
        # squid keeps its cache's files open: replacing them under a running lab would corrupt it
        raise LabBusy(f"this folder has a lab ({labdir.path}): `lab destroy` it before an import (the caches are kept)")
    manifest = read_manifest(file)
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    for leftover in root.glob(f"{STAGING_PREFIX}*"):  # what an interrupted import left
        shutil.rmtree(leftover, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=STAGING_PREFIX))
    try:
        # As root, tar keeps each file's owner and mode (the root filesystem's setuid programs, squid's files);
        # GNU tar refuses members with ".." and unpacks links only after the files, so nothing lands outside staging.
        try:
            with elapsed(say, f"unpacking {file}", f"unpacked {file.name}"):
                run(["tar", "--extract", "--file", str(file), "--numeric-owner", "--same-permissions",
                     "-C", str(staging)], timeout=1800)
        except ProviderError as error:  # a truncated or damaged archive: nothing of it was placed
            raise CacheArchiveError(f"{file} is damaged or cut short: tar could not unpack it ({one_line(error)}); "
                                    "nothing of it was put in the caches") from None
        mine = {part.kind: part for part in parts(topology)}
        for entry in manifest["parts"]:
            _place(CachePart(**entry), mine.get(entry["kind"]), staging, root, say)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _place(part: CachePart, own: CachePart | None, staging: Path, root: Path, say: Say) -> None:
    source = staging / part.path
    if not source.exists():
        raise CacheArchiveError(f"the archive lists {part.path} but does not hold it")
    if part.kind == WHEELS.kind:
        added = _merge_wheels(source, root / WHEELS.path)
        say(f"{part.what}: {added} added ({root / WHEELS.path})")
        return
    if own is None:
        say(f"left out {part.what}: this lab's provider does not use it")
        return
    # The packages a lab's proxy fetched are kept under the lab's name: the archive's become this lab's own. A root
    # filesystem is named after what went into it, and a name of another machine's is kept as it is (see below).
    target = own.path if part.kind == "packages" else part.path
    destination = root / target
    destination.parent.mkdir(parents=True, exist_ok=True)
    if destination.exists():
        shutil.rmtree(destination)
    os.rename(source, destination)
    if part.owner:
        run(["chown", "-R", part.owner, str(destination)])
    say(f"{part.what}: in {destination}")
    if target != own.path:
        say(f"note: this machine's lab uses {own.path}, not the archive's {part.path} (its extra CAs in "
            "/usr/local/share/ca-certificates differ): `lab up` builds its own, with the network")


def _merge_wheels(source: Path, folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    added = 0
    for wheel in sorted(source.glob("*.whl")):
        if not (folder / wheel.name).exists():
            wheel.chmod(0o644)  # hosts read the wheel cache (the local provider mounts it read-only)
            os.replace(wheel, folder / wheel.name)
            added += 1
    return added
