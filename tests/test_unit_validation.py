"""Unit tests for input that reaches a template: box names, lab and host names, addresses, and what a state file
hands back, each matched against a strict pattern and refused in one line with the topology exit code."""
from __future__ import annotations

import json

import pytest

from lab.errors import TopologyError
from lab.providers.vagrant import vagrantfile
from lab.testing import linux_topology, one_error_line, run_main
from lab.topology import Topology, checked_for_templates

INJECTIONS = ['x#{`touch /tmp/pwned`}', 'debian/bookworm64"; system("id"); "', "a\nb", "box name", "../box", "#{1}",
              "lab/debian12 ", "", "a/b/c", "debian/bookworm64\n"]  # `$` alone would let the trailing newline in


@pytest.mark.parametrize("key", ["box_libvirt", "box_virtualbox"])
@pytest.mark.parametrize("value", INJECTIONS)
def test_a_box_name_that_could_break_out_of_its_ruby_string_is_refused(key, value):
    with pytest.raises(TopologyError, match=f"vagrant.{key} must be a box name"):
        linux_topology({"vagrant": {key: value}})


@pytest.mark.parametrize("value", ["debian/bookworm64", "lab/debian12", "generic/debian12", "my-box_2.0"])
def test_ordinary_box_names_pass(value):
    topology = linux_topology({"vagrant": {"box_libvirt": value}})
    assert f'override.vm.box = "{value}"' in vagrantfile.render(topology, "qemu")


def test_lab_up_refuses_an_injected_box_name_before_writing_anything(tmp_path, capfd, monkeypatch):
    (tmp_path / "lab.toml").write_text('[lab]\nname = "h4v"\n[vagrant]\nbox_libvirt = "x#{`touch pwned`}"\n')
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(["up", "--provider", "vagrant"], capfd)
    assert code == TopologyError.exit_code == 3
    assert "vagrant.box_libvirt must be a box name" in one_error_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab.toml"]  # no .lab/, no Vagrantfile, no pwned


def tampered(**changes) -> dict:
    data = linux_topology().to_dict()
    data.update(changes)
    return json.loads(json.dumps(data))


@pytest.mark.parametrize("data", [
    tampered(vagrant={"box_libvirt": 'x#{`id`}'}),
    tampered(name='lab"; system("id"); "'),
    tampered(hosts=[{"name": "web1\nHost *", "tier": "web", "ip": "192.168.56.21", "memory_mb": 512, "cpus": 1}]),
    tampered(hosts=[{"name": "web1", "tier": "web", "ip": "192.168.56.21 all", "memory_mb": 512, "cpus": 1}]),
    tampered(name="lab\n"),
    tampered(hosts=[{"name": "web1\n", "tier": "web", "ip": "192.168.56.21", "memory_mb": 512, "cpus": 1}]),
    tampered(hosts=[{"name": "web1", "tier": "web\n", "ip": "192.168.56.21", "memory_mb": 512, "cpus": 1}]),
])
def test_a_state_file_cannot_smuggle_what_lab_toml_could_not(data):
    with pytest.raises(TopologyError):
        Topology.from_dict(data)


def test_the_vagrantfile_is_never_rendered_from_an_unchecked_topology():
    from dataclasses import replace

    bad = replace(linux_topology(), name="x#{1}")
    with pytest.raises(TopologyError):
        vagrantfile.render(bad, "qemu")


def test_every_resolved_topology_passes_its_own_check():
    topology = linux_topology({"tiers": {"web": {"count": 3}}})
    assert checked_for_templates(topology) is topology
    assert Topology.from_dict(topology.to_dict()) == Topology.from_dict(topology.to_dict())


@pytest.mark.parametrize("where", ["LAB_NAME", "lab.name"])
def test_a_lab_name_with_a_trailing_newline_is_refused(where, tmp_path, monkeypatch):
    from lab.topology import validate_name

    with pytest.raises(TopologyError, match=f"{where} must be 1-20 lowercase letters"):
        validate_name(where, "lab\n")
