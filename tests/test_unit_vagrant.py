"""Unit tests for the vagrant provider's bad input: each a one-line message naming the fix and its own exit code.

No VM is made: a fake `vagrant` program on PATH prints what the real one prints (its own locale's words) and
python-vagrant runs it for real; libvirt and the machine's packages are faked where the failure starts there.
"""
from __future__ import annotations

import json
import os
import shutil
import textwrap
from pathlib import Path

import pytest

from lab import machine_packages
from lab.errors import (BootTimeout, BoxMissing, LibvirtDown, MissingDependency, VagrantMissing, VagrantProviderMissing,
                        exit_code_for)
from lab.providers import get_provider
from lab.providers.vagrant import box, driver, libvirt, vagrantfile
from lab.providers.vagrant.driver import VagrantDriver, known_failure, parse_ssh_configs
from lab.state import LabDir
from lab.topology import resolve

import lab.providers.vagrant as vagrant_provider
from lab.testing import one_error_line, run_main

# What Vagrant 2.3.4 and vagrant-libvirt 0.11.2 print (their locale files, filled in as they fill them in).
BOX_NOT_FOUND = """\
Bringing machine 'lb1' up with 'libvirt' provider...
==> lb1: Box 'someone/else' could not be found. Attempting to find and install...
    lb1: Box Provider: libvirt
    lb1: Box Version: >= 0
The box 'someone/else' could not be found or
could not be accessed in the remote catalog. If this is a private
box on HashiCorp's Vagrant Cloud, please verify you're logged in via
`vagrant login`. Also, please double-check the name. The expanded
URL and error message are shown below:

URL: ["https://vagrantcloud.com/someone/else"]
Error: The requested URL returned error: 404
"""
LIBVIRT_DOWN = """\
Error while connecting to Libvirt: Error making a connection to libvirt URI qemu:///system:
Call to virConnectOpen failed: Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory
"""
BOOT_TIMEOUT = """\
Bringing machine 'lb1' up with 'libvirt' provider...
Bringing machine 'web1' up with 'libvirt' provider...
==> web1: Waiting for SSH to become available...
==> lb1: Machine booted and ready!
An error occurred while executing multiple actions in parallel.
Any errors that occurred are shown below.

An error occurred while executing the action on the 'web1'
machine. Please handle this error then try again:

Timed out while waiting for the machine to boot. This means that
Vagrant was unable to communicate with the guest machine within
the configured ("config.vm.boot_timeout" value) time period.
"""
PROVIDER_NOT_FOUND = """\
The provider 'libvirt' could not be found, but was requested to
back the machine 'lb1'. Please use a provider that exists.

Vagrant knows about the following providers: docker, hyperv, virtualbox
"""
PROVIDER_NOT_USABLE = """\
The provider 'virtualbox' that was requested to back the machine
'lb1' is reporting that it isn't usable on this system. The
reason is shown below:

Vagrant could not detect VirtualBox! Make sure VirtualBox is properly installed.
"""
STATUS = """\
1700000000,lb1,metadata,provider,libvirt
1700000000,lb1,provider-name,libvirt
1700000000,lb1,state,running
1700000000,web1,provider-name,libvirt
1700000000,web1,state,shutoff
1700000000,db1,provider-name,libvirt
1700000000,db1,state,not_created
"""


# -- Vagrant's words → the lab's errors ----------------------------------------------------------------


@pytest.mark.parametrize(("text", "kind", "code", "fix"), [
    (BOX_NOT_FOUND, BoxMissing, 17, "vagrant box add someone/else"),
    ("The box 'lab/debian12' isn't installed for the provider 'libvirt'.", BoxMissing, 17, "lab box build"),
    (LIBVIRT_DOWN, LibvirtDown, 18, "libvirtd -d"),
    (BOOT_TIMEOUT, BootTimeout, 19, "boot_timeout"),
    (PROVIDER_NOT_FOUND, VagrantProviderMissing, 16, "apt-get install vagrant-libvirt"),
    (PROVIDER_NOT_USABLE, VagrantProviderMissing, 16, "install VirtualBox"),
])
def test_vagrant_failures_become_one_line_errors_naming_the_fix(text, kind, code, fix):
    error = known_failure(text, Path("/lab/.lab/logs/vagrant.log"))
    assert isinstance(error, kind)
    assert exit_code_for(error) == code
    assert "\n" not in str(error)
    assert fix in str(error)


def test_the_exit_codes_are_distinct():
    kinds = (VagrantMissing, VagrantProviderMissing, BoxMissing, LibvirtDown, BootTimeout)
    codes = [k.exit_code for k in kinds]
    assert len(set(codes)) == len(codes)
    assert not set(codes) & set(range(0, 15))  # none of the codes the README already gives a meaning


def test_boot_timeout_names_the_vm_that_did_not_boot():
    error = known_failure(BOOT_TIMEOUT, Path("vagrant.log"))
    assert str(error).startswith("VM web1 did not boot")


def test_boot_timeout_names_every_vm_that_did_not_boot():
    block = ("An error occurred while executing the action on the '{}'\nmachine. Please handle this error then try again:\n\n"
             "Timed out while waiting for the machine to boot. This means that\n")
    text = "Any errors that occurred are shown below.\n\n" + "".join(block.format(n) for n in ("lb1", "web1", "db1"))
    assert str(known_failure(text, Path("vagrant.log"))).startswith("VMs lb1, web1, db1 did not boot within their boot timeout")


def test_an_unknown_failure_is_none():
    assert known_failure("Vagrant failed to initialize at a very early stage", Path("x")) is None


def test_ssh_config_blocks_per_vm_keep_the_first_value():
    text = textwrap.dedent("""\
        Host lb1
          HostName 192.168.121.5
          User vagrant
          Port 22
          IdentityFile /lab/.lab/.vagrant/machines/lb1/libvirt/private_key

        Host web1
          HostName 192.168.121.7
          User vagrant
          Port 22
          IdentityFile /lab/.lab/.vagrant/machines/web1/libvirt/private_key
          IdentityFile /root/.vagrant.d/insecure_private_key
          IdentitiesOnly yes
        """)
    blocks = parse_ssh_configs(text)
    assert set(blocks) == {"lb1", "web1"}
    web1 = blocks["web1"]
    assert web1["hostname"] == "192.168.121.7" and web1["user"] == "vagrant" and web1["port"] == "22"
    assert web1["identityfile"].endswith("web1/libvirt/private_key")
    assert blocks["lb1"]["hostname"] == "192.168.121.5"


# -- a fake `vagrant` run by python-vagrant -------------------------------------------------------------


@pytest.fixture
def fake_vagrant(tmp_path, monkeypatch):
    """A `vagrant` on PATH answering from files: up.txt (printed on stderr, exit 1 when present), status.txt."""
    answers = tmp_path / "answers"
    answers.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "vagrant"
    script.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        echo "vagrant $*" >> {answers}/calls
        case "$1" in
          up) if [ -f {answers}/up.txt ]; then cat {answers}/up.txt >&2; exit 1; fi ;;
          status) cat {answers}/status.txt ;;
          destroy) ;;
          *) echo "fake vagrant: $1 not faked" >&2; exit 1 ;;
        esac
        """))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return answers


@pytest.fixture
def project(no_lab):
    """An empty project folder (no_lab) on the vagrant provider with libvirt."""
    (no_lab / "lab.toml").write_text('[lab]\nname = "unit"\nsubnet = "192.168.57.0/24"\nprovider = "vagrant"\n'
                                     '[vagrant]\nprovider = "libvirt"\nlibvirt_driver = "qemu"\n')
    return no_lab


@pytest.fixture
def machine(monkeypatch):
    """libvirt installed and answering, the subnet free, no route changes: the machine as far as lab asks."""
    calls: list[str] = []
    monkeypatch.setattr(libvirt, "ensure_libvirt", lambda say: calls.append("ensure_libvirt"))
    monkeypatch.setattr(libvirt, "network_bridge", lambda name: None)
    monkeypatch.setattr(libvirt, "_libvirt_answers", lambda: True)
    monkeypatch.setattr(vagrant_provider.network, "check_subnet_free", lambda subnet, bridge: None)
    monkeypatch.setattr(vagrant_provider.network, "ensure_blackhole", lambda subnet: calls.append("blackhole"))
    monkeypatch.setattr(box, "ensure_box", lambda say: calls.append("ensure_box"))
    return calls






def test_box_missing_from_vagrant_up(project, fake_vagrant, machine, capfd):
    (project / "lab.toml").write_text((project / "lab.toml").read_text() + 'box_libvirt = "someone/else"\n')
    (fake_vagrant / "up.txt").write_text(BOX_NOT_FOUND)
    code, _, err = run_main(["up"], capfd)
    assert code == 17
    line = one_error_line(err)
    assert "someone/else is missing" in line and "vagrant box add someone/else" in line
    assert "ensure_box" not in machine  # lab builds only its own box
    assert "vagrant up --no-provision --provider=libvirt" in (fake_vagrant / "calls").read_text()


def test_the_labs_own_box_missing_without_root(project, monkeypatch, tmp_path):
    monkeypatch.setattr(box, "run", lambda args, **kw: type("R", (), {"stdout": "", "returncode": 0})())
    monkeypatch.setattr(VagrantDriver, "require_vagrant", staticmethod(lambda: None))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(BoxMissing, match=r"lab/debian12 is missing: build it once as root with `sudo lab box build`"):
        box.ensure_box(print)


def test_boot_timeout_from_vagrant_up(project, fake_vagrant, machine, capfd):
    (fake_vagrant / "up.txt").write_text(BOOT_TIMEOUT)
    code, _, err = run_main(["up"], capfd)
    assert code == 19
    line = one_error_line(err)
    assert "VM web1 did not boot within its boot timeout" in line and "[vagrant] boot_timeout" in line


def test_the_boot_timeout_is_the_labs_setting(project):
    (project / "lab.toml").write_text((project / "lab.toml").read_text() + "boot_timeout = 1800\n")
    from lab.lifecycle import Project

    text = vagrantfile.render(Project.here().topology(), "qemu")
    assert "config.vm.boot_timeout = 1800" in text


def test_provider_not_found_from_vagrant_up(project, fake_vagrant, machine, capfd):
    (fake_vagrant / "up.txt").write_text(PROVIDER_NOT_FOUND)
    code, _, err = run_main(["up"], capfd)
    assert code == 16
    assert "vagrant-libvirt" in one_error_line(err)


def test_an_older_failure_in_the_log_is_not_blamed(project, fake_vagrant, machine, capfd):
    log = project / ".lab" / "logs" / "vagrant.log"
    log.parent.mkdir(parents=True)
    log.write_text(BOOT_TIMEOUT)  # an earlier run's failure, long fixed
    (fake_vagrant / "up.txt").write_text("Vagrant failed in a way nobody has seen before\n")
    code, _, err = run_main(["up"], capfd)
    assert code == 10
    line = one_error_line(err)
    assert "nobody has seen before" in line and "boot" not in line


def test_libvirtd_not_running_when_up_starts_it_and_it_stays_down(monkeypatch):
    started = []

    def fake_run(args, **kw):
        started.append(args[0])
        return type("R", (), {"returncode": 1, "stdout": "", "stderr": ""})()

    monkeypatch.setattr(libvirt, "_virsh_version", lambda: type("R", (), {
        "returncode": 1, "stdout": "",
        "stderr": "error: failed to connect to the hypervisor\nerror: Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory",
    })())
    monkeypatch.setattr(libvirt, "run", fake_run)
    monkeypatch.setattr(libvirt, "DAEMON_TIMEOUT", 0.0)
    monkeypatch.setattr(libvirt.Path, "is_dir", lambda self: False)  # no systemd: the daemons are started by hand
    with pytest.raises(LibvirtDown) as caught:
        libvirt.start_libvirt(lambda message: None)
    assert exit_code_for(caught.value) == 18
    assert "libvirtd -d" in str(caught.value) and "\n" not in str(caught.value)
    assert "virtlogd" in started and "libvirtd" in started


def a_vagrant_lab_that_is_up(project: Path) -> None:
    """.lab/ as `lab up --provider=vagrant` leaves it (libvirt), without any VM behind it."""
    labdir = LabDir(project / ".lab")
    topology = resolve({"lab": {"name": "unit", "subnet": "192.168.57.0/24", "provider": "vagrant"}}, {})
    state = labdir.new_state(topology)
    state["status"] = "up"
    state["resources"] = {"vagrant_provider": "libvirt"}
    labdir.ensure()
    labdir.write(state)
    (labdir.path / "Vagrantfile").write_text("# rendered\n")


def test_libvirtd_not_running_for_status(project, fake_vagrant, monkeypatch, capfd):
    a_vagrant_lab_that_is_up(project)
    monkeypatch.setattr(libvirt, "_libvirt_answers", lambda: False)
    code, _, err = run_main(["status"], capfd)
    assert code == 18
    assert "libvirtd is not running" in one_error_line(err)


def test_status_shows_vagrants_own_states(project, fake_vagrant, monkeypatch, capfd):
    a_vagrant_lab_that_is_up(project)
    (fake_vagrant / "status.txt").write_text(STATUS)
    monkeypatch.setattr(libvirt, "_libvirt_answers", lambda: True)
    code, out, _ = run_main(["status", "--format", "json"], capfd)
    assert code == 0
    assert {r["name"]: r["state"] for r in json.loads(out)} == {"lb1": "running", "web1": "shutoff", "db1": "not created"}


def test_vagrant_missing(monkeypatch):
    monkeypatch.setattr(driver.shutil, "which", lambda name: None)
    with pytest.raises(VagrantMissing) as caught:
        VagrantDriver(Path("/nowhere"), Path("/nowhere/vagrant.log"))
    assert exit_code_for(caught.value) == 15
    assert "apt-get install vagrant" in str(caught.value)


def test_vagrant_missing_and_not_installable(project, monkeypatch, capfd):
    monkeypatch.setattr(vagrant_provider.network, "check_subnet_free", lambda subnet, bridge: None)

    def no_apt(packages, say):
        raise MissingDependency(f"lab needs {', '.join(sorted(set(packages.values())))} and cannot install them here (no apt-get)")

    monkeypatch.setattr(machine_packages, "ensure_debian_packages", no_apt)
    code, _, err = run_main(["up"], capfd)
    assert code == 15
    line = one_error_line(err)
    assert "vagrant is not installed" in line and "apt-get install vagrant" in line
    assert not (project / ".lab").exists()  # refused before anything was written


def test_vagrant_libvirt_plugin_missing_and_not_installable(monkeypatch):
    def packages(wanted, say):
        if "vagrant-libvirt" in wanted.values():
            raise MissingDependency("could not install vagrant-libvirt: E: Unable to locate package vagrant-libvirt")

    monkeypatch.setattr(machine_packages, "ensure_debian_packages", packages)
    monkeypatch.setattr(libvirt, "_plugin_installed", lambda: False)
    with pytest.raises(VagrantProviderMissing) as caught:
        libvirt.ensure_libvirt(lambda message: None)
    assert exit_code_for(caught.value) == 16
    assert "apt-get install vagrant-libvirt" in str(caught.value)


def test_virtualbox_not_installed(project, fake_vagrant, monkeypatch, capfd):
    (project / "lab.toml").write_text((project / "lab.toml").read_text().replace('provider = "libvirt"', 'provider = "virtualbox"'))
    real_which = shutil.which
    monkeypatch.setattr(vagrant_provider.shutil, "which", lambda name: None if name == "VBoxManage" else real_which(name))
    code, _, err = run_main(["up"], capfd)
    assert code == 16
    line = one_error_line(err)
    assert "virtualbox is not installed" in line and "install VirtualBox" in line
    assert not (project / ".lab").exists()


def test_a_subnet_on_the_management_network_is_refused(project, machine, capfd):
    (project / "lab.toml").write_text((project / "lab.toml").read_text().replace("192.168.57.0/24", "192.168.121.0/24"))
    code, _, err = run_main(["up"], capfd)
    assert code == 5
    assert "management network" in one_error_line(err)


# -- what recipes and checks are told ------------------------------------------------------------------


def test_ssh_comes_from_the_machine_on_the_management_network():
    topology = resolve({"lab": {"provider": "vagrant"}, "vagrant": {"provider": "libvirt"}}, {})
    facts = get_provider("vagrant").facts(topology)
    assert facts.control_address == "192.168.121.1"
    assert facts.proxy_url is None
    topology = resolve({"lab": {"provider": "vagrant"}, "vagrant": {"provider": "virtualbox"}}, {})
    assert get_provider("vagrant").facts(topology).control_address == "10.0.2.2"


def test_network_connections_from_its_xml():
    assert libvirt.network_connections("<network connections='3'>\n  <name>vagrant-libvirt</name>") == 3
    assert libvirt.network_connections("<network>\n  <name>vagrant-libvirt</name>") == 0


def test_up_shows_vagrants_milestones_and_logs_everything(tmp_path, fake_vagrant):
    (fake_vagrant / "up.out").write_text(
        "Bringing machine 'lb1' up with 'libvirt' provider...\n"
        "==> lb1: Creating image (snapshot of base box volume).\n"
        "==> lb1: Setting up network interfaces for the domain\n"
        "==> lb1: Waiting for SSH to become available...\n"
        "==> lb1: Machine booted and ready!\n"
    )
    script = fake_vagrant.parent / "bin" / "vagrant"
    script.write_text(script.read_text().replace(
        "up) if", f"up) cat {fake_vagrant}/up.out; if"))
    shown: list[str] = []
    VagrantDriver(tmp_path, tmp_path / "vagrant.log").up("libvirt", progress=shown.append)
    assert shown == ["lb1: Creating image (snapshot of base box volume).", "lb1: Waiting for SSH to become available...",
                     "lb1: Machine booted and ready!"]
    assert "Setting up network interfaces" in (tmp_path / "vagrant.log").read_text()


def test_an_unknown_failure_shows_vagrants_first_reason():
    text = (
        "==> db1: An error occurred. The error will be shown after all tasks complete.\n"
        "An error occurred while executing multiple actions in parallel.\nAny errors that occurred are shown below.\n\n"
        "An error occurred while executing the action on the 'lb1'\nmachine. Please handle this error then try again:\n\n"
        "Error while activating network: Call to virNetworkCreate failed: internal error: Network is already in use by interface *.\n"
    )
    assert driver.vagrants_reason(text) == ("lb1: Error while activating network: Call to virNetworkCreate failed: "
                                            "internal error: Network is already in use by interface *.")
