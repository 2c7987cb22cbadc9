"""Unit tests for lab.hostcheck: checks see every host as root, whoever the provider logs in as (no host needed)."""
from __future__ import annotations

import pytest

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


MUX_ERROR = ("CommandResult(exit_status=255, _stderr=b'mux_client_request_session: read from master failed: Broken pipe"
             "\\r\\nFailed to connect to new control master\\r\\n')")


def failing_first(times: int, error: str):
    calls = []

    def run_ssh(self_or_command, command=None):
        calls.append(command or self_or_command)
        if len(calls) <= times:
            raise RuntimeError(error)
        return "ran"
    return run_ssh, calls


def test_a_check_whose_control_master_was_exiting_runs_again(tmp_path, monkeypatch):
    from testinfra.backend.ssh import SshBackend
    run_ssh, calls = failing_first(1, MUX_ERROR)
    monkeypatch.setattr(SshBackend, "run_ssh", run_ssh)
    labdir = LabDir(tmp_path)
    labdir.ssh_config.write_text("Host db1\n  User root\n")
    assert hostcheck.get_host(labdir, "db1").backend.run("uname -s") == "ran"  # through get_host's own backend
    assert calls == ["uname -s", "uname -s"]


def test_a_master_that_keeps_failing_is_reported_after_the_retries():
    run_ssh, calls = failing_first(10, MUX_ERROR)
    with pytest.raises(RuntimeError, match="control master"):  # a lasting mux failure is raised
        hostcheck.retrying_mux_failures(run_ssh, pause_s=0)("id")
    assert len(calls) == hostcheck.MUX_RETRIES + 1


def test_an_unreachable_host_is_not_tried_again():
    run_ssh, calls = failing_first(1, "CommandResult(exit_status=255, _stderr=b'ssh: connect to host 192.168.56.21 "
                                      "port 22: No route to host')")
    with pytest.raises(RuntimeError, match="No route to host"):  # raised at once: only mux failures are tried again
        hostcheck.retrying_mux_failures(run_ssh, pause_s=0)("id")
    assert calls == ["id"]
