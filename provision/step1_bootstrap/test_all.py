"""Step 1 checks on every host: lab names resolve, sshd is key-only, and no route leads off the lab network."""

import pytest

from lab.stack import all_tiers

TIERS = all_tiers()
# `lab check`: one line per check, what to try when it fails (lab/workshop.py prints it).
HINTS = {
    "test_hosts_file_names_every_lab_host": "write every lab host's address and name into /etc/hosts (see provision/step1_bootstrap/templates/hosts.j2)",
    "test_sshd_running_key_only": "`systemctl enable --now ssh` and set PasswordAuthentication no in /etc/ssh/sshd_config.d/",
    "test_no_default_route_when_behind_the_lab_proxy": "point apt at the lab proxy in /etc/apt/apt.conf.d/80lab-proxy (Acquire::http::Proxy); add no default route",
}


def test_hosts_file_names_every_lab_host(host, lab):
    hosts = host.file("/etc/hosts").content_string
    for other in lab.hosts:
        assert f"{other.ip}\t{other.name}" in hosts


def test_sshd_running_key_only(host):
    assert host.service("ssh").is_running
    assert host.service("ssh").is_enabled
    config = host.run("sshd -T").stdout
    assert "passwordauthentication no" in config


def test_no_default_route_when_behind_the_lab_proxy(host, facts):
    if facts.proxy_url is None:  # a provider whose hosts have their own way out (e.g. Vagrant's NAT)
        pytest.skip("this provider's hosts have their own way out (no lab proxy)")
    assert "default" not in host.run("ip route show").stdout
    assert host.file("/etc/apt/apt.conf.d/80lab-proxy").contains(facts.proxy_url)
