"""Unit tests for pinned SSH host keys (lab.remote): the first `lab up` records each key, a changed key is refused in
one line with its own exit code and nothing written, and `lab forget-key HOST` re-pins one host on purpose."""
from __future__ import annotations

import paramiko
import pytest

from lab import cli as cli_module
from lab import lifecycle, remote
from lab.errors import HostKeyChanged, ProviderError
from lab.hosts import HostFacts, SshEndpoint
from lab.remote import forget_host_key, pin_host_keys, pinned_keys, render_known_hosts, render_ssh_config
from lab.state import LabDir
from lab.testing import one_error_line, run_main

KEY_A, KEY_B, KEY_C = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI" + c * 43 for c in "ABC")


def endpoint(host: str, key: str | None, address: str = "192.168.56.21") -> SshEndpoint:
    return SshEndpoint(host, address, 22, "root", "/lab/id_ed25519", key)


def first_up(labdir: LabDir, endpoints: list[SshEndpoint]) -> list[SshEndpoint]:
    pinned = pin_host_keys(labdir, endpoints)
    labdir.known_hosts.write_text(render_known_hosts(pinned))
    return pinned


@pytest.fixture
def labdir(tmp_path) -> LabDir:
    labdir = LabDir(tmp_path / ".lab")
    labdir.ensure()
    return labdir


def test_the_first_up_pins_what_the_provider_read(labdir):
    first_up(labdir, [endpoint("web1", KEY_A), endpoint("db1", KEY_B, "192.168.56.31")])
    assert pinned_keys(labdir) == {"web1": KEY_A, "db1": KEY_B}


def test_a_vm_without_a_known_key_is_pinned_on_first_use_then_held_to_it(labdir, monkeypatch):
    offers = {"192.168.56.21": KEY_A}
    monkeypatch.setattr(remote, "scan_host_key", lambda address, port, key_type: offers.get(address))
    pinned = first_up(labdir, [endpoint("web1", None)])
    assert pinned[0].host_key == KEY_A
    assert "StrictHostKeyChecking yes" in render_ssh_config(pinned, labdir)
    offers["192.168.56.21"] = KEY_C  # the VM was replaced, or something answers in its place
    before = labdir.known_hosts.read_text()
    with pytest.raises(HostKeyChanged) as refused:
        pin_host_keys(labdir, [endpoint("web1", None)])
    assert refused.value.exit_code == 55
    assert "web1" in str(refused.value) and "lab forget-key web1" in str(refused.value)
    assert "\n" not in str(refused.value)
    assert labdir.known_hosts.read_text() == before


def test_a_host_whose_key_changed_on_disk_is_refused(labdir):
    first_up(labdir, [endpoint("web1", KEY_A), endpoint("db1", KEY_B, "192.168.56.31")])
    with pytest.raises(HostKeyChanged, match="web1"):
        pin_host_keys(labdir, [endpoint("web1", KEY_C), endpoint("db1", KEY_B, "192.168.56.31")])


def test_forget_key_re_pins_one_host_on_purpose(labdir):
    first_up(labdir, [endpoint("web1", KEY_A), endpoint("db1", KEY_B, "192.168.56.31")])
    assert forget_host_key(labdir, "web1") is True
    assert forget_host_key(labdir, "web1") is False
    assert pinned_keys(labdir) == {"db1": KEY_B}
    pinned = pin_host_keys(labdir, [endpoint("web1", KEY_C), endpoint("db1", KEY_B, "192.168.56.31")])
    assert [e.host_key for e in pinned] == [KEY_C, KEY_B]


def test_a_vm_that_offers_no_key_on_first_up_is_an_error(labdir, monkeypatch):
    tries = []
    monkeypatch.setattr(remote, "scan_host_key", lambda address, port, key_type: tries.append(address))
    monkeypatch.setattr(remote.time, "sleep", lambda seconds: None)
    with pytest.raises(ProviderError, match="no SSH host key could be read from web1"):
        pin_host_keys(labdir, [endpoint("web1", None)])
    assert len(tries) == 1 + remote.FIRST_SCAN_RETRIES


def test_a_vm_slow_to_start_sshd_on_first_up_is_pinned_once_it_answers(labdir, monkeypatch):
    answers = iter([None, None, KEY_A])
    monkeypatch.setattr(remote, "scan_host_key", lambda address, port, key_type: next(answers))
    pauses = []
    monkeypatch.setattr(remote.time, "sleep", pauses.append)
    [pinned] = pin_host_keys(labdir, [endpoint("web1", None)])
    assert pinned.host_key == KEY_A and len(pauses) == 2


def test_check_host_keys_refuses_a_running_host_with_another_key(labdir, monkeypatch):
    pinned = first_up(labdir, [endpoint("web1", KEY_A)])
    labdir.ssh_config.write_text(render_ssh_config(pinned, labdir))
    seen = []
    monkeypatch.setattr(remote, "scan_host_key", lambda address, port, key_type: seen.append((address, port)) or KEY_C)
    with pytest.raises(HostKeyChanged):
        remote.check_host_keys(labdir, ["web1"])
    assert seen == [("192.168.56.21", 22)]
    monkeypatch.setattr(remote, "scan_host_key", lambda address, port, key_type: None)
    remote.check_host_keys(labdir, ["web1"])  # a host that does not answer is left to the connection itself


def test_vms_behind_forwarded_ports_each_have_their_own_pin(labdir):
    endpoints = [SshEndpoint("web1", "127.0.0.1", 2222, "vagrant", "/k", KEY_A),
                 SshEndpoint("db1", "127.0.0.1", 2200, "vagrant", "/k", KEY_B)]
    text = render_known_hosts(endpoints)
    assert text == f"web1,[127.0.0.1]:2222 {KEY_A}\ndb1,[127.0.0.1]:2200 {KEY_B}\n"  # as paramiko looks them up
    assert "HostKeyAlias web1" in render_ssh_config(endpoints, labdir)  # as OpenSSH looks them up
    labdir.known_hosts.write_text(text)
    assert pinned_keys(labdir) == {"web1": KEY_A, "db1": KEY_B}


def test_paramiko_finds_the_pin_of_a_forwarded_port(labdir):
    import paramiko

    labdir.known_hosts.write_text(render_known_hosts([SshEndpoint("web1", "127.0.0.1", 2222, "vagrant", "/k", KEY_A)]))
    keys = paramiko.HostKeys(str(labdir.known_hosts))
    assert keys.lookup("[127.0.0.1]:2222") is not None and keys.lookup("web1") is not None


# -- end to end through main(): `lab up`, `lab test` and `lab ssh` on a lab whose web1 now offers another key -----


def key_of(host: str) -> str:
    """A distinct well-formed ed25519 public key per host, as the first `lab up` pinned it."""
    return "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI" + (host.upper() * 43)[:43]


class FakeHosts:
    """The provider of a made lab: hosts it finds running, or starts in `up`; then they offer `offers_after_up`."""

    def __init__(self) -> None:
        self.offers: dict[str, str] = {}  # address -> the key ssh-keyscan gets from it now (none: no answer)
        self.offers_after_up: dict[str, str] = {}
        self.ups = 0

    def preflight(self, topology, labdir, say) -> None:
        pass

    def up(self, topology, labdir, state, say, offline=False) -> list[SshEndpoint]:
        self.ups += 1
        self.offers.update(self.offers_after_up)
        return [SshEndpoint(h.name, h.ip, 22, "root", str(labdir.private_key), None) for h in topology.hosts]

    def status(self, labdir, state) -> dict[str, str]:
        return {h.name: "running" for h in labdir.topology().hosts}

    def facts(self, topology) -> HostFacts:
        return HostFacts(proxy_url=None)


def lab_files(labdir: LabDir) -> dict[str, bytes]:
    """Every file under .lab/ (state.json, known_hosts, ssh_config and the rest), byte for byte."""
    return {str(p.relative_to(labdir.path)): p.read_bytes() for p in sorted(labdir.path.rglob("*")) if p.is_file()}


def never(*args, **kwargs):
    raise AssertionError("a lab whose host key changed must be neither provisioned nor checked")


@pytest.fixture
def made_lab(no_lab, monkeypatch) -> tuple[LabDir, FakeHosts]:
    """A lab whose `lab up` finished (state "up", every key pinned, ssh_config written), in the current folder, with
    its provider and ssh-keyscan faked."""
    project = lifecycle.Project.here()
    topology = project.topology()  # what a plain `lab up` here resolves: the same lab, no choices to remember
    labdir = project.labdir
    labdir.ensure()
    labdir.write(dict(labdir.new_state(topology), status="up"))
    endpoints = [SshEndpoint(h.name, h.ip, 22, "root", str(labdir.private_key), key_of(h.name)) for h in topology.hosts]
    labdir.known_hosts.write_text(render_known_hosts(endpoints))
    labdir.ssh_config.write_text(render_ssh_config(endpoints, labdir))
    provider = FakeHosts()
    monkeypatch.setattr(lifecycle, "get_provider", lambda name: provider)
    monkeypatch.setattr(remote, "scan_host_key", lambda address, port, key_type: provider.offers.get(address))
    monkeypatch.setattr(lifecycle.recipes_module, "converge", never)
    monkeypatch.setattr(lifecycle.verify, "run_checks", never)
    return labdir, provider


def web1_replaced(labdir: LabDir) -> dict[str, str]:
    """What each host offers once web1 was re-made behind lab's back: its pinned key, but web1 another one."""
    return {h.ip: KEY_C if h.name == "web1" else key_of(h.name) for h in labdir.topology().hosts}


def assert_refused_in_one_line(code: int, out: str, err: str) -> None:
    assert code == HostKeyChanged.exit_code == 55
    line = one_error_line(err)  # exactly one line on stderr, `lab: error: ...`; run_main saw no traceback
    assert "web1" in line and "`lab forget-key web1`" in line
    assert not any(host in line for host in ("lb1", "db1"))
    assert out == ""


@pytest.mark.parametrize("verb", ["up", "test"])
def test_a_running_host_offering_another_key_is_refused_by_the_cli_with_nothing_changed(made_lab, capfd, verb):
    labdir, provider = made_lab
    provider.offers.update(web1_replaced(labdir))
    before = lab_files(labdir)
    assert {"state.json", "known_hosts", "ssh_config"} <= set(before)
    code, out, err = run_main([verb], capfd)
    assert_refused_in_one_line(code, out, err)
    assert lab_files(labdir) == before  # state.json, known_hosts, ssh_config (and all else) byte for byte
    assert provider.ups == 0  # refused before the provider touched a host


def test_a_stopped_host_re_made_with_another_key_is_refused_by_lab_up_once_the_provider_started_it(made_lab, capfd):
    # Stopped hosts do not answer the check `lab up` makes before the provider's up: the new key is first seen by
    # pin_host_keys, after it. The pins and the ssh_config still stay as they were.
    labdir, provider = made_lab
    provider.offers_after_up.update(web1_replaced(labdir))
    known_hosts, ssh_config = labdir.known_hosts.read_bytes(), labdir.ssh_config.read_bytes()
    code, out, err = run_main(["up"], capfd)
    assert_refused_in_one_line(code, out, err)
    assert (labdir.known_hosts.read_bytes(), labdir.ssh_config.read_bytes()) == (known_hosts, ssh_config)
    assert provider.ups == 1


def test_a_stopped_host_re_made_with_another_key_leaves_the_state_file_as_it_was(made_lab, capfd):
    labdir, provider = made_lab
    provider.offers_after_up.update(web1_replaced(labdir))
    before = labdir.state_file.read_bytes()
    code, _, _ = run_main(["up"], capfd)
    assert code == 55
    assert labdir.state_file.read_bytes() == before


def test_lab_ssh_leaves_a_changed_key_to_openssh_held_to_the_pins(made_lab, capfd, monkeypatch):
    # `lab ssh` execs OpenSSH with the lab's ssh_config: a changed key is refused by ssh's own strict checking
    # against .lab/known_hosts (ssh's message, exit code 255), not by lab (one line, 55).
    labdir, provider = made_lab
    provider.offers.update(web1_replaced(labdir))
    before = lab_files(labdir)
    ran: list[list[str]] = []

    def execvp(program, argv):
        ran.append(argv)
        raise SystemExit(255)  # as ssh would exit, refusing the key

    monkeypatch.setattr(cli_module.os, "execvp", execvp)
    code, out, err = run_main(["ssh", "web1"], capfd)
    assert code == 255 and ran == [["ssh", "-F", str(labdir.ssh_config), "web1"]]
    config = paramiko.SSHConfig.from_path(str(labdir.ssh_config)).lookup("web1")
    assert config["stricthostkeychecking"] == "yes" and config["hostkeyalias"] == "web1"
    assert config["userknownhostsfile"] == str(labdir.known_hosts)
    assert pinned_keys(labdir)["web1"] == key_of("web1") != KEY_C
    assert lab_files(labdir) == before
