"""Step 1 checks on every host: lab names resolve, sshd is key-only, and no route leads off the lab network."""

import pytest

from lab.stack import all_tiers

TIERS = all_tiers()
# `lab check`: one line per check, what to try when it fails (lab/workshop.py prints it).
HINTS = {
    "test_hosts_file_names_every_lab_host": "one line per lab host in /etc/hosts, its address then its name (`lab status` lists them), e.g. `192.168.56.21 web1`",
    "test_sshd_running_key_only": "`systemctl enable --now ssh` and set PasswordAuthentication no in /etc/ssh/sshd_config.d/",
    "test_no_default_route_when_behind_the_lab_proxy": "write `Acquire::http::Proxy \"http://<the lab's .1 address>:3128\";` (e.g. 192.168.56.1) into /etc/apt/apt.conf.d/80lab-proxy; add no default route",
}


def names_by_address(hosts_file):
    """{address: {names}} from an /etc/hosts text: any whitespace between fields, comments left out."""
    found = {}
    for line in hosts_file.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2:
            found.setdefault(fields[0], set()).update(fields[1:])
    return found


def test_hosts_file_names_every_lab_host(host, lab):
    hosts_file = host.file("/etc/hosts")
    assert hosts_file.exists, "no /etc/hosts"
    found = names_by_address(hosts_file.content_string)
    missing = [f"{other.ip} {other.name}" for other in lab.hosts if other.name not in found.get(other.ip, set())]
    assert not missing, f"/etc/hosts lacks {', '.join(missing)}"


def test_sshd_running_key_only(host):
    assert host.service("ssh").is_running
    assert host.service("ssh").is_enabled
    config = host.run("sshd -T").stdout
    assert "passwordauthentication no" in config


def test_no_default_route_when_behind_the_lab_proxy(host, facts):
    if facts.proxy_url is None:  # a provider whose hosts have their own way out (e.g. Vagrant's NAT)
        pytest.skip("this provider's hosts have their own way out (no lab proxy)")
    assert "default" not in host.run("ip route show").stdout, "the host has a default route: lab hosts go out through the lab proxy only"
    proxy = host.file("/etc/apt/apt.conf.d/80lab-proxy")
    assert proxy.exists and proxy.contains(facts.proxy_url), f"/etc/apt/apt.conf.d/80lab-proxy does not name the lab proxy {facts.proxy_url}"
