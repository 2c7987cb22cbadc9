"""The lab's caching HTTP proxy (squid) on the bridge: hosts reach the package registries through it, and nothing else."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import jinja2

from lab.errors import ProviderError
from lab.system import run

REGISTRIES = ("deb.debian.org", "security.debian.org", "pypi.org", "files.pythonhosted.org")
PORT = 3128


# `lab up --offline`: serve what the cache holds without asking the registries whether it is still fresh, and never
# go to them for what it lacks (a miss is answered 503 at once, so apt fails naming the package instead of hanging).
OFFLINE_DIRECTIVES = "offline_mode on\nnever_direct allow all\n"


def render_config(name: str, gateway: str, subnet: str, run_dir: Path, cache_dir: Path, offline: bool = False) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent), undefined=jinja2.StrictUndefined, keep_trailing_newline=True
    )
    return env.get_template("squid.conf.j2").render(
        name=name, gateway=gateway, subnet=subnet, run_dir=run_dir, cache_dir=cache_dir, registries=" ".join(REGISTRIES),
        offline_directives=OFFLINE_DIRECTIVES if offline else "",
    )


def ensure_proxy(name: str, gateway: str, subnet: str, run_dir: Path, cache_dir: Path, offline: bool = False) -> None:
    """Start (or restart after a config change) this lab's squid; the cache survives `lab destroy`."""
    config = render_config(name, gateway, subnet, run_dir, cache_dir, offline)
    conf_file = run_dir / "squid.conf"
    run_dir.mkdir(parents=True, exist_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    for path in (run_dir, cache_dir):
        shutil.chown(path, "proxy", "proxy")
    changed = not conf_file.exists() or conf_file.read_text() != config
    if changed:
        stop_proxy(run_dir)
        conf_file.write_text(config)
    elif proxy_pid(run_dir) and _accepting(gateway):
        return
    if not (cache_dir / "00").exists():
        run(["squid", "-N", "-z", "-f", str(conf_file)], timeout=120)
    stop_proxy(run_dir)  # a dead pid file or a half-started squid from an interrupted run
    run(["squid", "-f", str(conf_file)])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if _accepting(gateway):
            return
        time.sleep(0.1)
    raise ProviderError(f"the lab proxy did not start on {gateway}:{PORT}; see {run_dir / 'cache.log'}")


def proxy_pid(run_dir: Path) -> int | None:
    try:
        pid = int((run_dir / "squid.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


def _accepting(gateway: str) -> bool:
    try:
        with socket.create_connection((gateway, PORT), timeout=0.5):
            return True
    except OSError:
        return False


def stop_proxy(run_dir: Path) -> None:
    """Stop squid and every process of it, even when its pid file is gone."""
    conf_file = str(run_dir / "squid.conf")
    pid = proxy_pid(run_dir)
    if pid:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _squid_pids(conf_file):
        time.sleep(0.1)
    for leftover in _squid_pids(conf_file):
        try:
            os.kill(leftover, signal.SIGKILL)
        except ProcessLookupError:
            pass
    (run_dir / "squid.pid").unlink(missing_ok=True)


def _squid_pids(conf_file: str) -> list[int]:
    result = subprocess.run(["pgrep", "-f", f"squid.* {conf_file}"], capture_output=True, text=True)
    return [int(p) for p in result.stdout.split()]
