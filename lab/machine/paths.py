"""Where lab keeps machine-wide caches (shared by every lab and provider) and per-lab host files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_root() -> Path:
    """Caches shared by every lab on this machine (rootfs, Vagrant box, proxy cache, wheels); kept by `lab destroy`."""
    return Path(os.environ.get("LAB_CACHE_DIR", "/var/cache/lab"))


def data_root() -> Path:
    """Per-lab host disks (overlay upper layers); removed by `lab destroy`."""
    return Path(os.environ.get("LAB_DATA_DIR", "/var/lib/lab"))


def short_id(*parts: str) -> str:
    """A stable 8-hex-digit id: interface names must fit in 15 characters."""
    return hashlib.sha1("/".join(parts).encode()).hexdigest()[:8]
