"""The lab directory (.lab/): state file with a fixed set of keys, keys and secrets, a lock."""

from __future__ import annotations

import fcntl
import json
import os
import secrets as random_secrets
import shutil
import subprocess
import time
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from lab.errors import LabBusy, NotALabDir, NotUp, ProviderError
from lab.files import TEMPORARY_SUFFIX, write_atomically
from lab.topology import Topology

_LOCKS_HELD: dict[Path, int] = {}  # lab folders whose lock this process holds for nested sections, and how deep

STATE_VERSION = 2
# "choices": what the user chose with `lab up` flags (topology.Overrides.choices()), applied again by later runs.
STATE_KEYS = ("version", "name", "provider", "status", "topology", "resources", "created_at", "updated_at", "choices")
# Version 1 (before lab remembered flags) had no "choices": None stands for "not recorded", and `lab up` then
# keeps the lab as its topology records it.
VERSION_1_KEYS = tuple(key for key in STATE_KEYS if key != "choices")
STATUSES = ("creating", "up", "destroying")
SECRET_NAMES = ("django_secret_key", "db_password", "demo_password", "replication_password", "queue_password")
# What lab itself puts in a lab directory, also before its state file exists (a first `lab up` interrupted early):
# a folder holding anything else and no state file is not lab's, and lab neither writes into it nor removes it.
LAB_MADE = {"state.json", "ssh_config", "known_hosts", "id_ed25519", "id_ed25519.pub", "secrets.toml", "logs",
            "results", "lock", "ca", "steps.json", "Vagrantfile", ".vagrant"}
# Never made by lab: a folder with one of these is a project or a checkout, whatever else it holds.
NEVER_LAB_MADE = {"lab.toml", ".git", "pyproject.toml", "README.md"}


@dataclass(frozen=True)
class LabDir:
    """Where one lab keeps everything it needs to be inspected, reached and destroyed."""

    path: Path

    @property
    def state_file(self) -> Path:
        return self.path / "state.json"

    @property
    def ssh_config(self) -> Path:
        return self.path / "ssh_config"

    @property
    def known_hosts(self) -> Path:
        return self.path / "known_hosts"

    @property
    def private_key(self) -> Path:
        return self.path / "id_ed25519"

    @property
    def secrets_file(self) -> Path:
        return self.path / "secrets.toml"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def results(self) -> Path:
        return self.path / "results"

    def exists(self) -> bool:
        return self.state_file.exists()

    def foreign_entries(self) -> list[str]:
        """What in this folder lab did not make: a lab directory is recognised by its state file, and before that
        holds nothing but lab's own files; anything else means LAB_DIR (or .lab) names a folder lab did not make."""
        if not self.path.is_dir():
            return [self.path.name] if self.path.exists() else []
        names = {child.name for child in self.path.iterdir()}
        made = {name for name in names if name in LAB_MADE or name.endswith(TEMPORARY_SUFFIX)
                or name.startswith("id_ed25519.tmp")}
        foreign = sorted(names & NEVER_LAB_MADE) if self.exists() else sorted(names - made)
        return foreign

    def refuse_foreign(self, verb: str) -> None:
        foreign = self.foreign_entries()
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise NotALabDir(f"{self.path} is not a lab directory (it holds {shown}, which lab did not make); lab "
                             f"will not {verb} it: point LAB_DIR at a new or empty folder, or at a lab's own .lab/")

    def ensure(self) -> None:
        self.refuse_foreign("write into")
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)

    @contextmanager
    def locked(self, nested_allowed: bool = False) -> Iterator[None]:
        """Hold the lab's lock: two commands changing one lab at once would fight.

        nested_allowed: code inside may take the lock again in this process (`lab bench` holds it for the whole bench
        while it runs `lab up`'s code); otherwise a second locked section excludes the first, as another command's.
        """
        self.ensure()
        key = self.path.resolve()
        if _LOCKS_HELD.get(key):
            _LOCKS_HELD[key] += 1
            try:
                yield
            finally:
                _LOCKS_HELD[key] -= 1
            return
        with open(self.path / "lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LabBusy(f"another lab command is working on {self.path}; wait for it to finish") from None
            if nested_allowed:
                _LOCKS_HELD[key] = 1
            try:
                yield
            finally:
                _LOCKS_HELD.pop(key, None)

    def read(self) -> dict[str, Any]:
        """The state file, or NotUp when there is no lab here."""
        if not self.exists():
            raise NotUp(f"no lab in {self.path}: run `lab up` first")
        try:
            data = json.loads(self.state_file.read_text())
        except (OSError, ValueError) as error:
            raise ProviderError(f"{self.state_file} is unreadable ({error}); fix or remove it by hand") from None
        if isinstance(data, dict) and data.get("version") == 1 and sorted(data) == sorted(VERSION_1_KEYS):
            data = dict(data, version=STATE_VERSION, choices=None)
        if not isinstance(data, dict) or sorted(data) != sorted(STATE_KEYS) or data["version"] != STATE_VERSION:
            raise ProviderError(f"{self.state_file} has unexpected keys; it was written by another version of lab")
        return data

    def topology(self) -> Topology:
        return Topology.from_dict(self.read()["topology"])

    def write(self, data: dict[str, Any]) -> None:
        """Replace the state file atomically, so an interrupted write never leaves half a file."""
        missing = set(STATE_KEYS) - set(data)
        extra = set(data) - set(STATE_KEYS)
        if missing or extra or data["status"] not in STATUSES:
            raise ValueError(f"bad state: missing {missing}, extra {extra}, status {data.get('status')}")
        data = dict(data, updated_at=_now())
        write_atomically(self.state_file, json.dumps(data, indent=2, sort_keys=True) + "\n", fsync=True)

    def new_state(self, topology: Topology, choices: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "name": topology.name,
            "provider": topology.provider,
            "status": "creating",
            "topology": topology.to_dict(),
            "resources": {},
            "created_at": _now(),
            "updated_at": _now(),
            "choices": dict(choices or {}),
        }

    def ensure_key(self) -> str:
        """The lab's own SSH key pair (made once per lab); returns the public key."""
        if not self.private_key.exists():
            self.ensure()
            tmp = self.path / "id_ed25519.tmp"
            for leftover in (tmp, tmp.with_suffix(".tmp.pub")):
                leftover.unlink(missing_ok=True)
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"lab@{self.path}", "-f", str(tmp)],
                check=True,
                stdin=subprocess.DEVNULL,
            )
            os.replace(tmp.with_suffix(".tmp.pub"), self.private_key.with_suffix(".pub"))
            os.replace(tmp, self.private_key)
        return self.private_key.with_suffix(".pub").read_text().strip()

    def secrets(self) -> dict[str, str]:
        """Per-lab secrets, generated on first use and kept (mode 0600) so re-runs converge."""
        current: dict[str, str] = {}
        if self.secrets_file.exists():
            current = tomllib.loads(self.secrets_file.read_text())
        if all(name in current for name in SECRET_NAMES):
            return current
        for name in SECRET_NAMES:
            current.setdefault(name, random_secrets.token_urlsafe(48 if name == "django_secret_key" else 24))
        body = "# generated by lab for this lab only; never commit\n" + "".join(
            f'{key} = "{value}"\n' for key, value in sorted(current.items())
        )
        self.ensure()
        write_atomically(self.secrets_file, body, fsync=True)
        return current

    def secret_values(self) -> list[str]:
        """The lab's secret values as they are now (none made here): what output must never show."""
        if not self.secrets_file.exists():
            return []
        return [value for value in tomllib.loads(self.secrets_file.read_text()).values() if isinstance(value, str)]

    def remove(self, keep_results: bool = True) -> None:
        """Forget the lab: everything in .lab/ except measured results (a folder lab did not make: refused)."""
        if not self.path.exists():
            return
        self.refuse_foreign("remove")
        for child in self.path.iterdir():
            if keep_results and child.name == "results":
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        if not any(self.path.iterdir()):
            self.path.rmdir()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
