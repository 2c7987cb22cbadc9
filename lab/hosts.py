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
    wheelhouse: str | None = None  # the machine's wheel cache as the host sees it (read-only), or None: from PyPI
    control_address: str | None = None  # where lab's SSH comes from, as hosts see it; None: from anywhere
    # (protocol, port) the provider's own management needs on any address of every host, outside the lab network:
    # a VM's sshd answering Vagrant on its management NIC, and that NIC's DHCP client. Empty for the local provider.
    management_sockets: tuple[tuple[str, int], ...] = ()
