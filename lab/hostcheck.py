"""The one place lab touches pytest-testinfra: a checked host, reached through the lab's ssh_config."""

from __future__ import annotations

import time
from typing import Any, Callable

import paramiko

from lab.state import LabDir


def login_user(labdir: LabDir, name: str) -> str:
    """The user lab's ssh_config logs in to `name` as (root, or a provider's own user such as vagrant)."""
    config = paramiko.SSHConfig.from_path(str(labdir.ssh_config))
    return config.lookup(name).get("user", "root")


def get_host(labdir: LabDir, name: str) -> Any:
    """A testinfra Host for `name`; OpenSSH with a control master keeps repeated checks cheap.

    Checks see every host as root, whoever the provider logs in as: where that is another user (Vagrant's
    `vagrant`, with passwordless sudo), every command runs through sudo, as lab's recipes do.
    """
    import testinfra  # imported late: pytest must load first to rewrite its plugin's asserts

    host = testinfra.get_host(f"ssh://{name}", ssh_config=str(labdir.ssh_config), controlpersist=30,
                              sudo=login_user(labdir, name) != "root")
    host.backend.run_ssh = retrying_mux_failures(host.backend.run_ssh)
    return host


# What OpenSSH says when a command reached a control master that was exiting (its ControlPersist ran out, or its
# ServerAlive checks gave up on a busy VM) as the command asked it for a session: a known race of multiplexing
# (the CI's `lab test` on VMs failed a check on it once). The check never ran; the next ssh makes a new master.
MUX_FAILURES = ("mux_client_request_session", "Failed to connect to new control master", "Control socket connect")
MUX_RETRIES = 2


def retrying_mux_failures(run_ssh: Callable[[str], Any], pause_s: float = 1.0) -> Callable[[str], Any]:
    """testinfra's run_ssh, tried again (up to MUX_RETRIES times) when ssh failed (exit 255) for its control master
    only; any other failure, the host's unreachability included, is raised at once."""
    def run(command: str) -> Any:
        for attempt in range(MUX_RETRIES + 1):
            try:
                return run_ssh(command)
            except RuntimeError as error:
                if attempt == MUX_RETRIES or not any(sign in str(error) for sign in MUX_FAILURES):
                    raise
                time.sleep(pause_s)
    return run
