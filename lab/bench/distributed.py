"""Locust's distributed mode across the lab: one worker per loadgen host, for a master running on the machine."""

from __future__ import annotations

import re
import shlex
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from lab.errors import BenchError
from lab.remote import RemoteHost
from lab.topology import Host, Topology
from provision.step6_loadgen.recipes import LOCUST_BIN, LOCUST_USER, RUN_DIR, WORKER_UNIT

LOADGEN_TIER = "loadgen"
ENV_FILE = f"{RUN_DIR}/env"
CA_FILE = f"{RUN_DIR}/ca.crt"
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def environment_file(env: Mapping[str, str]) -> str:
    """systemd's EnvironmentFile syntax: the worker's environment without a word of it on a command line."""
    lines = []
    for name, value in env.items():
        if not ENV_NAME.fullmatch(name) or "\n" in value:
            raise BenchError(f"cannot pass {name!r} to a remote Locust worker (names are identifiers, values one line)")
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'{name}="{escaped}"\n')
    return "".join(lines)


def worker_command(locustfile_name: str, master_host: str, master_port: int) -> str:
    """The transient systemd unit running one worker: it outlives the SSH session and `systemctl stop` ends it."""
    return " ".join(shlex.quote(word) for word in (
        "systemd-run", f"--unit={WORKER_UNIT}", "--collect", f"--property=User={LOCUST_USER}",
        f"--property=EnvironmentFile={ENV_FILE}", f"--working-directory={RUN_DIR}",
        LOCUST_BIN, "-f", f"{RUN_DIR}/{locustfile_name}", "--worker",
        "--master-host", master_host, "--master-port", str(master_port),
    ))


# Forget a worker a previous bench left (killed lab, lost SSH), and the files it was given; tolerant of nothing there.
STOP_COMMAND = (f"systemctl stop {WORKER_UNIT} 2>/dev/null; systemctl reset-failed {WORKER_UNIT} 2>/dev/null; "
                f"find {RUN_DIR} -mindepth 1 -delete; true")


def _upload(host: Any, path: str, text: str) -> None:
    """A file only the worker's user can read, written from stdin (its content never on a command line)."""
    q = shlex.quote(path)
    result = host.run(f"umask 077 && cat > {q} && chown {LOCUST_USER}:{LOCUST_USER} {q}", stdin=text)
    if not result.ok:
        raise BenchError(f"could not write {path} on {host.name}: {result.stderr.strip()[-200:]}")


@contextmanager
def remote_workers(project: Any, topology: Topology, locustfile: Path, master_host: str, master_port: int,
                   env: Mapping[str, str], connect: Callable[[Any, str], Any] = RemoteHost) -> Iterator[int]:
    """One Locust worker per loadgen host for the block (yields how many), all stopped when it ends, however.

    `project` is a lab.lifecycle.Project. The master runs on the machine, bound to `master_host` (the lab bridge's
    address, reachable from the lab's hosts only) with `--expect-workers` counting these; workers wait for it.
    The locustfile's folder's Python files are copied beside it (a locustfile may import its neighbours); a CA file
    named by LAB_CA_FILE is copied too and the variable points at the copy.
    """
    hosts: list[Host] = [h for h in topology.hosts if h.tier == LOADGEN_TIER]
    if not hosts:
        yield 0
        return
    locustfile = Path(locustfile).resolve()
    files = {p.name: p.read_text() for p in sorted(locustfile.parent.glob("*.py"))}
    files[locustfile.name] = locustfile.read_text()
    worker_env = dict(env)
    if worker_env.get("LAB_CA_FILE"):
        files_ca = Path(worker_env["LAB_CA_FILE"]).read_text()
        worker_env["LAB_CA_FILE"] = CA_FILE
    else:
        files_ca = None
    env_text = environment_file(worker_env)

    def start(host: Host) -> None:
        remote = connect(project.labdir, host.name)
        try:
            remote.run(STOP_COMMAND)
            for name, text in files.items():
                _upload(remote, f"{RUN_DIR}/{name}", text)
            if files_ca is not None:
                _upload(remote, CA_FILE, files_ca)
            _upload(remote, ENV_FILE, env_text)
            result = remote.run(worker_command(locustfile.name, master_host, master_port))
            if not result.ok:
                raise BenchError(f"could not start a Locust worker on {host.name}: {result.stderr.strip()[-200:]}")
        finally:
            remote.close()

    def stop(host: Host) -> None:
        remote = connect(project.labdir, host.name)
        try:
            remote.run(STOP_COMMAND)
        finally:
            remote.close()

    try:
        with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
            list(pool.map(start, hosts))
        yield len(hosts)
    finally:
        with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
            list(pool.map(stop, hosts))
