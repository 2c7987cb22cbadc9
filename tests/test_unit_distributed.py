"""Unit tests for lab.bench.distributed with fake loadgen hosts: files and environment through stdin, one systemd unit
per host pointed at the master, and every worker stopped whatever ends the block; the loadgen tier's registration."""
from __future__ import annotations

import shlex
from types import SimpleNamespace

import pytest

from lab import stack
from lab.bench import distributed
from lab.errors import BenchError
from lab.remote import CommandResult
from lab.topology import resolve


class FakeHost:
    log: list = []
    fail_start_on: set = set()

    def __init__(self, labdir, name):
        self.name = name

    def run(self, command, user=None, timeout=None, stdin=None):
        FakeHost.log.append(SimpleNamespace(host=self.name, command=command, stdin=stdin))
        if command.startswith("systemd-run") and self.name in FakeHost.fail_start_on:
            return CommandResult(command, 1, "", "Failed to start transient service unit\n")
        return CommandResult(command, 0, "", "")

    def close(self):
        pass


@pytest.fixture
def fake_hosts():
    FakeHost.log = []
    FakeHost.fail_start_on = set()
    return FakeHost


@pytest.fixture
def locustfile(tmp_path):
    (tmp_path / "mix.py").write_text("from helpers import x\n")
    (tmp_path / "helpers.py").write_text("x = 1\n")
    return tmp_path / "mix.py"


def lab_with(loadgen: int):
    return resolve({"tiers": {"loadgen": {"count": loadgen}}} if loadgen else {}, environ={}, platform="linux")


PROJECT = SimpleNamespace(labdir="labdir")
ENV = {"LAB_DEMO_PASSWORD": 'pa ss"w\\rd', "LAB_USERS": "8"}


def test_the_loadgen_tier_is_optional_and_addressed_apart_from_the_others():
    spec = stack.current().tiers["loadgen"]
    assert (spec.default_count, spec.min_count) == (0, 0)
    assert [h.name for h in lab_with(0).hosts if h.tier == "loadgen"] == []
    assert [(h.name, h.ip) for h in lab_with(2).hosts if h.tier == "loadgen"] == [
        ("loadgen1", "192.168.56.51"), ("loadgen2", "192.168.56.52")]


def test_no_loadgen_host_means_no_remote_worker(fake_hosts, locustfile):
    with distributed.remote_workers(PROJECT, lab_with(0), locustfile, "192.168.56.1", 5557, ENV,
                                    connect=fake_hosts) as count:
        assert count == 0
    assert fake_hosts.log == []


def test_each_loadgen_host_gets_the_files_then_one_worker_pointed_at_the_master(fake_hosts, locustfile):
    with distributed.remote_workers(PROJECT, lab_with(2), locustfile, "192.168.56.1", 5557, ENV,
                                    connect=fake_hosts) as count:
        assert count == 2
        for host in ("loadgen1", "loadgen2"):
            commands = [c for c in fake_hosts.log if c.host == host]
            assert commands[0].command == distributed.STOP_COMMAND  # a leftover worker goes first
            uploads = {shlex.split(c.command)[-1]: c.stdin for c in commands if "cat >" in c.command}
            assert uploads["/opt/locust/run/mix.py"] == "from helpers import x\n"
            assert uploads["/opt/locust/run/helpers.py"] == "x = 1\n"
            assert uploads["/opt/locust/run/env"] == 'LAB_DEMO_PASSWORD="pa ss\\"w\\\\rd"\nLAB_USERS="8"\n'
            assert all("umask 077" in c.command for c in commands if "cat >" in c.command)
            start = shlex.split(commands[-1].command)
            assert start[:2] == ["systemd-run", "--unit=lab-locust-worker"]
            assert "--property=User=locust" in start and "--property=EnvironmentFile=/opt/locust/run/env" in start
            assert start[start.index("-f") + 1] == "/opt/locust/run/mix.py"
            assert start[-5:] == ["--worker", "--master-host", "192.168.56.1", "--master-port", "5557"]
            assert not any(ENV["LAB_DEMO_PASSWORD"] in c.command for c in commands)  # secrets never on a command line
        fake_hosts.log.clear()
    assert sorted(c.host for c in fake_hosts.log) == ["loadgen1", "loadgen2"]
    assert all(c.command == distributed.STOP_COMMAND for c in fake_hosts.log)


def test_workers_are_stopped_when_the_run_is_interrupted(fake_hosts, locustfile):
    with pytest.raises(KeyboardInterrupt):
        with distributed.remote_workers(PROJECT, lab_with(1), locustfile, "192.168.56.1", 5557, {},
                                        connect=fake_hosts):
            fake_hosts.log.clear()
            raise KeyboardInterrupt
    assert [c.command for c in fake_hosts.log] == [distributed.STOP_COMMAND]


def test_a_worker_that_does_not_start_is_a_bench_error_and_the_others_are_stopped(fake_hosts, locustfile):
    fake_hosts.fail_start_on = {"loadgen2"}
    with pytest.raises(BenchError, match="could not start a Locust worker on loadgen2: Failed to start"):
        with distributed.remote_workers(PROJECT, lab_with(2), locustfile, "192.168.56.1", 5557, {}, connect=fake_hosts):
            pytest.fail("the block must not run without every worker")
    assert {c.host for c in fake_hosts.log[-2:]} == {"loadgen1", "loadgen2"}
    assert all(c.command == distributed.STOP_COMMAND for c in fake_hosts.log[-2:])


def test_the_ca_file_travels_with_the_worker_and_the_variable_names_the_copy(fake_hosts, locustfile, tmp_path):
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    with distributed.remote_workers(PROJECT, lab_with(1), locustfile, "192.168.56.1", 5557,
                                    {"LAB_CA_FILE": str(ca)}, connect=fake_hosts):
        uploads = {shlex.split(c.command)[-1]: c.stdin for c in fake_hosts.log if "cat >" in c.command}
    assert uploads["/opt/locust/run/ca.crt"] == "-----BEGIN CERTIFICATE-----\n"
    assert uploads["/opt/locust/run/env"] == 'LAB_CA_FILE="/opt/locust/run/ca.crt"\n'


@pytest.mark.parametrize("env", [{"BAD NAME": "x"}, {"OK": "two\nlines"}])
def test_an_environment_systemd_could_not_read_is_refused(env):
    with pytest.raises(BenchError, match="cannot pass"):
        distributed.environment_file(env)
