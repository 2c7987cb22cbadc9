"""Unit tests for lab.machine.network's host links: a host made again keeps its MAC address (real netns and veth)."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from lab.machine import network


def test_a_hosts_mac_follows_from_its_address():
    assert network.host_mac("192.168.56.32") == "02:6c:c0:a8:38:20"
    assert network.host_mac("192.168.56.21") != network.host_mac("192.168.57.21")


@pytest.mark.skipif(os.geteuid() != 0, reason="makes a network namespace and a veth (root only)")
def test_a_host_made_again_has_the_mac_its_neighbours_cached():
    bridge, netns, veth = "labunitbr0", "lab-unit-mac", "lvunitmac"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)  # no address: nothing routed
    try:
        def mac() -> str:
            out = subprocess.run(["ip", "-n", netns, "-j", "link", "show", "dev", "eth0"], check=True,
                                 capture_output=True, text=True).stdout
            return json.loads(out)[0]["address"]

        network.ensure_host_link(netns, veth, bridge, "192.168.250.32", "192.168.250.0/24")
        assert mac() == "02:6c:c0:a8:fa:20"
        network.remove_host_link(netns, veth)  # the host removed (a shrink, a bench step put back) ...
        network.ensure_host_link(netns, veth, bridge, "192.168.250.32", "192.168.250.0/24")  # ... and made again
        assert mac() == "02:6c:c0:a8:fa:20"
        subprocess.run(["ip", "-n", netns, "link", "set", "eth0", "address", "02:00:00:00:00:01"], check=True)
        network.ensure_host_link(netns, veth, bridge, "192.168.250.32", "192.168.250.0/24")  # made by an older lab
        assert mac() == "02:6c:c0:a8:fa:20"
    finally:
        network.remove_host_link(netns, veth)
        subprocess.run(["ip", "link", "del", bridge], check=False)
