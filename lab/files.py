"""Writing a file so that no reader, crash or Ctrl-C ever sees half of it."""

from __future__ import annotations

import os
from pathlib import Path

TEMPORARY_SUFFIX = ".tmp"  # the next write of the same file reuses (and so clears) what an interrupted one left


def write_atomically(path: Path, data: str | bytes, mode: int = 0o600, fsync: bool = False) -> None:
    """Write data to a file beside path, then rename it over path: readers see the old content or the new, whole.

    The file gets exactly `mode` (umask aside, and also when an interrupted write left its temporary file behind
    with another mode), before it holds any data. fsync=True also flushes it to disk before the rename, for files
    whose loss after a power cut would cost more than a rewrite (the lab's state, its secrets).
    """
    temporary = path.with_name(path.name + TEMPORARY_SUFFIX)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), mode)
        handle.write(data.encode() if isinstance(data, str) else data)
        if fsync:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(temporary, path)
