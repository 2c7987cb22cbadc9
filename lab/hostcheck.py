"""The one place lab touches pytest-testinfra: a checked host, reached through the lab's ssh_config."""

from __future__ import annotations

from typing import Any

from lab.state import LabDir


def get_host(labdir: LabDir, name: str) -> Any:
    """A testinfra Host for `name`; OpenSSH with a control master keeps repeated checks cheap."""
    import testinfra  # imported late: pytest must load first to rewrite its plugin's asserts

    return testinfra.get_host(f"ssh://{name}", ssh_config=str(labdir.ssh_config), controlpersist=30)
