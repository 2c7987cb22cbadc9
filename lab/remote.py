"""Reaching a host over SSH with Fabric, through the lab's one ssh_config and its pinned host keys."""

from __future__ import annotations

import io
import shlex
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Iterable

import paramiko
from fabric import Config, Connection

from lab.errors import HostKeyChanged, ProviderError
from lab.files import write_atomically
from lab.hosts import SshEndpoint
from lab.state import LabDir

COMMAND_ENV = "DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def render_ssh_config(endpoints: list[SshEndpoint], labdir: LabDir) -> str:
    """One ssh_config for Fabric, testinfra and `lab ssh` alike."""
    blocks = [f"# written by lab for {labdir.path}; use with: ssh -F {labdir.ssh_config} HOST\n"]
    for e in endpoints:
        blocks.append(
            f"Host {e.host}\n"
            f"  HostName {e.address}\n"
            f"  Port {e.port}\n"
            f"  User {e.user}\n"
            f"  IdentityFile {e.identity_file}\n"
            f"  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {labdir.known_hosts}\n"
            f"  HostKeyAlias {e.host}\n"  # the pin is the host's, whatever address or forwarded port reaches it
            f"  StrictHostKeyChecking yes\n"
            f"  ControlPath /tmp/lab-ssh-%C\n"
            f"  ConnectTimeout 10\n"
            f"  ServerAliveInterval 5\n"
            f"  LogLevel ERROR\n"
        )
    return "\n".join(blocks)


def render_known_hosts(endpoints: list[SshEndpoint]) -> str:
    """One line per host: its name (OpenSSH's HostKeyAlias) and its address as paramiko looks it up
    ("[address]:port" for a forwarded port, as several VMs share 127.0.0.1 under VirtualBox)."""
    def address(e: SshEndpoint) -> str:
        return e.address if e.port == 22 else f"[{e.address}]:{e.port}"
    return "".join(f"{e.host},{address(e)} {e.host_key}\n" for e in endpoints if e.host_key)


# -- pinned host keys ------------------------------------------------------------------------------------------
# The first `lab up` records each host's key in .lab/known_hosts (the key the provider read off the host's disk, or
# for a VM the one it offers on that first connection); later runs refuse a host offering another key. Re-pinning
# is a decision: `lab forget-key HOST` drops the one key, and the next `lab up` records the host's new key.

def pinned_keys(labdir: LabDir) -> dict[str, str]:
    """host name -> "type base64" as .lab/known_hosts pins it (empty before the first `lab up`)."""
    if not labdir.known_hosts.exists():
        return {}
    pins = {}
    for line in labdir.known_hosts.read_text().splitlines():
        words = line.split()
        if len(words) >= 3 and not line.startswith("#"):
            pins[words[0].split(",")[0]] = f"{words[1]} {words[2]}"
    return pins


def scan_host_key(address: str, port: int, key_type: str = "ssh-ed25519") -> str | None:
    """The key a host offers on its SSH port ("type base64"), or None when it does not answer."""
    try:
        done = subprocess.run(["ssh-keyscan", "-T", "5", "-t", key_type.removeprefix("ssh-"), "-p", str(port), address],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in done.stdout.splitlines():
        words = line.split()
        if len(words) >= 3 and not line.startswith("#"):
            return f"{words[1]} {words[2]}"
    return None


def _refuse_changed(labdir: LabDir, changed: list[str]) -> None:
    if changed:
        raise HostKeyChanged(
            f"the SSH host key of {', '.join(changed)} is not the one lab pinned in {labdir.known_hosts} "
            f"(refused; nothing changed); if you re-made the host on purpose: `lab forget-key {changed[0]}`, then `lab up`")


FIRST_SCAN_RETRIES = 6  # with ssh-keyscan's own 5 s timeout: about a minute for a slow first boot
FIRST_SCAN_PAUSE_S = 5.0


def pin_host_keys(labdir: LabDir, endpoints: list[SshEndpoint]) -> list[SshEndpoint]:
    """The endpoints with each host's key: the one pinned, checked against what the host now offers; a host seen
    for the first time gets the key its provider read or, if none, the one it offers now (trust on first use).
    A host offering another key than the pinned one is refused (HostKeyChanged)."""
    pinned = pinned_keys(labdir)

    def offered(e: SshEndpoint) -> str | None:
        key_type = pinned.get(e.host, "ssh-ed25519").split()[0]
        key = e.host_key or scan_host_key(e.address, e.port, key_type)
        # A VM seen for the first time may still be starting sshd on a loaded machine: give it a few more tries
        # before calling it an error (a pinned host that does not answer is left to the connection itself).
        for _ in range(FIRST_SCAN_RETRIES if e.host not in pinned else 0):
            if key is not None:
                break
            time.sleep(FIRST_SCAN_PAUSE_S)
            key = scan_host_key(e.address, e.port, key_type)
        return key

    with ThreadPoolExecutor(max_workers=max(1, len(endpoints))) as pool:
        keys = list(pool.map(offered, endpoints))
    missing = [e.host for e, key in zip(endpoints, keys) if key is None and e.host not in pinned]
    if missing:
        raise ProviderError(f"no SSH host key could be read from {', '.join(missing)} (ssh-keyscan got no answer)")
    _refuse_changed(labdir, [e.host for e, key in zip(endpoints, keys) if e.host in pinned and key and key != pinned[e.host]])
    return [replace(e, host_key=pinned.get(e.host) or key) for e, key in zip(endpoints, keys)]


def check_host_keys(labdir: LabDir, hosts: Iterable[str]) -> None:
    """Before lab connects to running hosts (`lab up`, `lab test`): refuse, in one line, a host that now offers
    another key than the pinned one. Hosts that do not answer are left to the connection itself."""
    pinned = pinned_keys(labdir)
    hosts = [h for h in hosts if h in pinned]
    if not hosts or not labdir.ssh_config.exists():
        return
    config = paramiko.SSHConfig.from_path(str(labdir.ssh_config))

    def offered(host: str) -> str | None:
        found = config.lookup(host)
        return scan_host_key(found.get("hostname", host), int(found.get("port", 22)), pinned[host].split()[0])

    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        keys = dict(zip(hosts, pool.map(offered, hosts)))
    _refuse_changed(labdir, [h for h, key in keys.items() if key and key != pinned[h]])


def forget_host_key(labdir: LabDir, host: str) -> bool:
    """Drop one host's pinned key (`lab forget-key HOST`), so the next `lab up` pins the key it offers then."""
    pins = pinned_keys(labdir)
    if host not in pins:
        return False
    kept = [line for line in labdir.known_hosts.read_text().splitlines(keepends=True)
            if line.split(",")[0].split()[0:1] != [host]]
    write_atomically(labdir.known_hosts, "".join(kept), fsync=True)
    return True


@dataclass(frozen=True)
class CommandResult:
    command: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class RemoteHost:
    """One SSH connection to one host; commands run as root (through sudo when the login user is not root)."""

    def __init__(self, labdir: LabDir, host_name: str) -> None:
        config = Config(runtime_ssh_path=str(labdir.ssh_config), overrides={"load_ssh_configs": True})
        self.name = host_name
        self.connection = Connection(host_name, config=config, connect_timeout=10)
        if labdir.known_hosts.exists() and labdir.known_hosts.stat().st_size:
            # Fabric would accept any key; the lab knows each host's key, so insist on it.
            self.connection.client.load_host_keys(str(labdir.known_hosts))
            self.connection.client.set_missing_host_key_policy(paramiko.RejectPolicy())

    def run(self, command: str, user: str | None = None, timeout: float | None = 900,
            stdin: str | None = None) -> CommandResult:
        """Run a shell command as root (or `user`); `stdin` is what the command reads on its standard input (how a
        secret reaches a program: never on the command line, where `ps` and sudo's journal would show it)."""
        other_user = bool(user) and user != "root"
        # Another user starts in /, not root's home: it may not enter /root, and psql & co. say so on stderr.
        wrapped = f"env {COMMAND_ENV} sh -c {shlex.quote(('cd / && ' if other_user else '') + command)}"
        if other_user:
            wrapped = f"sudo -n -H -u {shlex.quote(user)} {wrapped}"
        elif self.connection.user != "root":
            wrapped = f"sudo -n -H {wrapped}"
        try:
            if stdin is not None:
                return self._run_with_stdin(command, wrapped, stdin.encode(), timeout)
            result = self.connection.run(wrapped, hide=True, warn=True, in_stream=False, timeout=timeout, pty=False)
        except paramiko.BadHostKeyException:
            raise HostKeyChanged(f"{self.name} offered another SSH host key than the one lab pinned (refused); "
                                 f"if you re-made it on purpose: `lab forget-key {self.name}`, then `lab up`") from None
        return CommandResult(command, result.exited, result.stdout, result.stderr)

    def _run_with_stdin(self, command: str, wrapped: str, data: bytes, timeout: float | None) -> CommandResult:
        # Not through invoke: its stdin loop forwards one byte per 10 ms (a 750-byte pgbouncer.ini took 7.5 s, twice
        # per failover). The channel gets the whole input at once, then end-of-file, so `cat` ends.
        self.connection.open()
        channel = self.connection.client.get_transport().open_session()
        try:
            channel.exec_command(wrapped)
            def send() -> None:
                try:
                    channel.sendall(data)
                    channel.shutdown_write()
                except (OSError, EOFError, paramiko.SSHException):
                    pass  # the command ended without reading all of it: its exit code says how it went

            sender = threading.Thread(target=send, daemon=True)
            sender.start()  # beside the reads below, so a command that answers while reading never waits on us
            out, err = bytearray(), bytearray()
            deadline = time.monotonic() + timeout if timeout else None
            while True:
                busy = False
                if channel.recv_ready():
                    out += channel.recv(65536)
                    busy = True
                if channel.recv_stderr_ready():
                    err += channel.recv_stderr(65536)
                    busy = True
                if not busy:
                    if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
                        break
                    if deadline is not None and time.monotonic() > deadline:
                        raise TimeoutError(f"{self.name}: `{command}` still running after {timeout:.0f} s")
                    time.sleep(0.002)
            return CommandResult(command, channel.recv_exit_status(), out.decode(errors="replace"),
                                 err.decode(errors="replace"))
        finally:
            channel.close()

    def put(self, data: bytes, remote_path: str) -> None:
        """Upload bytes to a path the login user can write (a temporary file, moved into place as root)."""
        self.connection.put(io.BytesIO(data), remote_path)

    def get(self, remote_path: str) -> bytes:
        buffer = io.BytesIO()
        self.connection.get(remote_path, buffer)
        return buffer.getvalue()

    def close(self) -> None:
        self.connection.close()
