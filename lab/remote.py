"""Reaching a host over SSH with Fabric, through the lab's one ssh_config and its pinned host keys."""

from __future__ import annotations

import io
import shlex
from dataclasses import dataclass

import paramiko
from fabric import Config, Connection

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
            f"  StrictHostKeyChecking {'yes' if e.host_key else 'accept-new'}\n"
            f"  ControlPath /tmp/lab-ssh-%C\n"
            f"  ConnectTimeout 10\n"
            f"  ServerAliveInterval 5\n"
            f"  LogLevel ERROR\n"
        )
    return "\n".join(blocks)


def render_known_hosts(endpoints: list[SshEndpoint]) -> str:
    return "".join(f"{e.host},{e.address} {e.host_key}\n" for e in endpoints if e.host_key)


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

    def run(self, command: str, user: str | None = None, timeout: float | None = 900) -> CommandResult:
        wrapped = f"env {COMMAND_ENV} sh -c {shlex.quote(command)}"
        if user and user != "root":
            wrapped = f"sudo -n -H -u {shlex.quote(user)} {wrapped}"
        elif self.connection.user != "root":
            wrapped = f"sudo -n -H {wrapped}"
        result = self.connection.run(wrapped, hide=True, warn=True, in_stream=False, timeout=timeout)
        return CommandResult(command, result.exited, result.stdout, result.stderr)

    def put(self, data: bytes, remote_path: str) -> None:
        """Upload bytes to a path the login user can write (a temporary file, moved into place as root)."""
        self.connection.put(io.BytesIO(data), remote_path)

    def get(self, remote_path: str) -> bytes:
        buffer = io.BytesIO()
        self.connection.get(remote_path, buffer)
        return buffer.getvalue()

    def close(self) -> None:
        self.connection.close()
