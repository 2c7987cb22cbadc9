"""The one place lab touches pytest-testinfra: a checked host, reached through the lab's ssh_config."""

from __future__ import annotations

from typing import Any

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

    return testinfra.get_host(f"ssh://{name}", ssh_config=str(labdir.ssh_config), controlpersist=30,
                              sudo=login_user(labdir, name) != "root")
