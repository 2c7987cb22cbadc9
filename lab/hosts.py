"""What lab knows about a host whichever provider made it: how to reach it by SSH, and the facts recipes may use."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SshEndpoint:
    """How to reach one host over SSH; rendered into the lab's one ssh_config."""

    host: str
    address: str
    port: int
    user: str
    identity_file: str
    host_key: str | None  # "ssh-ed25519 AAAA..." when the provider knows it; None means accept on first use


@dataclass(frozen=True)
class HostFacts:
    """What recipes may need to know about how a host reaches the outside world, and nothing else."""

    proxy_url: str | None  # HTTP proxy for apt and pip, or None for direct access
    wheelhouse: str | None = None  # a folder on the host shared by every host, to download each wheel once
    control_address: str | None = None  # where lab's SSH comes from, as hosts see it; None: from anywhere
