"""Unit tests for lab.hostcheck: checks see every host as root, whoever the provider logs in as (no host needed)."""
from __future__ import annotations

from lab import hostcheck
from lab.state import LabDir


def test_checks_run_as_root_whoever_logs_in(tmp_path):
    labdir = LabDir(tmp_path)
    labdir.ssh_config.write_text("Host web1\n  User vagrant\n  Port 22\n\nHost db1\n  User root\n")
    assert hostcheck.login_user(labdir, "web1") == "vagrant"
    assert hostcheck.login_user(labdir, "db1") == "root"
    host = hostcheck.get_host(labdir, "web1")
    assert host.backend.get_command("cat %s", "/etc/shadow") == "sudo /bin/sh -c 'cat /etc/shadow'"
    assert hostcheck.get_host(labdir, "db1").backend.get_command("id") == "id"
