"""The listening-sockets check reads ss's local addresses right (IPv4, IPv6 in brackets, wildcards, interface
suffixes) and allows beyond the links only what the provider's management declares (a Vagrant VM's sshd, DHCP)."""

from __future__ import annotations

import contextlib
import ipaddress

import pytest

from lab.hosts import HostFacts
from lab.providers.vagrant import MANAGEMENT_SOCKETS
from lab.testing import linux_topology
from provision.step1_bootstrap import test_sockets
from provision.step1_bootstrap.test_sockets import parse_local


@pytest.mark.parametrize("address, expected", [
    ("192.168.56.21:8000", (ipaddress.ip_address("192.168.56.21"), 8000)),
    ("[::1]:5432", (ipaddress.ip_address("::1"), 5432)),
    ("127.0.0.53%lo:53", (ipaddress.ip_address("127.0.0.53"), 53)),
    ("[fe80::1%eth0]:546", (ipaddress.ip_address("fe80::1"), 546)),
    ("*:22", (None, 22)),
    ("0.0.0.0:80", (None, 80)),
    ("[::]:443", (None, 443)),
])
def test_local_addresses(address: str, expected: tuple) -> None:
    assert parse_local(address) == expected


class FakeHost:
    """A testinfra host whose `ss -Hltunp` prints the given lines."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def sudo(self):
        return contextlib.nullcontext()

    def check_output(self, command: str) -> str:
        assert command == "ss -Hltunp"
        return "\n".join(self.lines)


SSHD_ANYWHERE = 'tcp LISTEN 0 128 0.0.0.0:22 0.0.0.0:* users:(("sshd",pid=500,fd=3))'
DHCLIENT = 'udp UNCONN 0 0 0.0.0.0:68 0.0.0.0:* users:(("dhclient",pid=400,fd=9))'
GUNICORN = 'tcp LISTEN 0 2048 192.168.56.21:8000 0.0.0.0:* users:(("gunicorn",pid=700,fd=5))'


def check(lines: list[str], facts: HostFacts) -> None:
    topology = linux_topology()
    node = topology.host("web1")
    test_sockets.test_listening_sockets_are_what_the_links_allow(FakeHost(lines), node, topology, facts)


def test_a_wildcard_sshd_and_a_dhcp_client_fail_where_the_provider_needs_none() -> None:
    with pytest.raises(AssertionError, match=r"tcp \*:22 \(sshd\).*udp \*:68 \(dhclient\)"):
        check([GUNICORN, SSHD_ANYWHERE, DHCLIENT], HostFacts(proxy_url=None, control_address="192.168.56.1"))


def test_a_vms_management_sockets_are_allowed_and_nothing_more() -> None:
    vagrant = HostFacts(proxy_url=None, control_address="192.168.121.1", management_sockets=MANAGEMENT_SOCKETS)
    check([GUNICORN, SSHD_ANYWHERE, DHCLIENT], vagrant)
    with pytest.raises(AssertionError, match=r"tcp \*:5432"):
        check([GUNICORN, SSHD_ANYWHERE, 'tcp LISTEN 0 244 0.0.0.0:5432 0.0.0.0:* users:(("postgres",pid=9,fd=6))'], vagrant)
