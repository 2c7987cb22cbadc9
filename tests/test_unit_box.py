"""Unit tests for the Vagrant box and the QEMU driver choice: box contents, boot-test verdicts, caches (no root, no VM)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.providers.vagrant import box, libvirt
from lab.providers.vagrant.box import BOX_NAME, box_metadata, box_vagrantfile, grub_cfg, listed_boxes
from lab.providers.vagrant.libvirt import cached_driver, classify_boot_output, driver_cache_key

# What this machine's QEMU printed when KVM was asked for `-cpu host`.
MSR_ABORT = (
    "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x2000000001c02eb\n"
    "qemu-system-x86_64: ../target/i386/kvm/kvm.c:3234: kvm_buf_set_msrs: Assertion `ret == cpu->kvm_msr_buf->nmsrs' failed.\n"
)
PANIC_NO_ROOT = (
    "[    1.345855] VFS: Cannot open root device \"(null)\" or unknown-block(0,0): error -6\n"
    "[    1.346275] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n"
)
EARLY_HANG = "SeaBIOS (version 1.16.2-debian-1.16.2-1)\r\nBooting from ROM...\r\nProbing EDD (edd=off to disable)... ok\r\n"


def test_metadata_is_a_v1_libvirt_qcow2_box():
    assert box_metadata(20, "k") == {"provider": "libvirt", "format": "qcow2", "virtual_size": 20, "lab_box_key": "k"}
    assert json.loads(json.dumps(box_metadata())) == box_metadata(box.VIRTUAL_SIZE_GB)


def test_an_added_box_from_an_older_recipe_is_replaced(monkeypatch, tmp_path):
    monkeypatch.setattr(box, "machine_ca_certificates", lambda: [])
    monkeypatch.setenv("VAGRANT_HOME", str(tmp_path / "vagrant.d"))
    monkeypatch.setattr(box.VagrantDriver, "require_vagrant", staticmethod(lambda: None))
    listed = "1,,box-name,lab/debian12\n1,,box-provider,libvirt\n1,,box-version,0\n"
    calls = []

    def fake_run(args, **kw):
        calls.append(args)
        return type("R", (), {"stdout": listed if args[:3] == ["vagrant", "box", "list"] else "", "returncode": 0})()

    monkeypatch.setattr(box, "run", fake_run)
    monkeypatch.setattr(box, "build_box", lambda say, force=False: tmp_path / "built.box")
    monkeypatch.setattr(box, "_drop_old_box_volumes", lambda say: None)
    added = tmp_path / "vagrant.d/boxes/lab-VAGRANTSLASH-debian12/0/libvirt"
    added.mkdir(parents=True)
    (added / "metadata.json").write_text(json.dumps(box_metadata(key="an-older-recipe")))
    assert box.added_box_key() == "an-older-recipe"
    assert box.ensure_box(lambda message: None) == BOX_NAME
    assert ["vagrant", "box", "add", "--force", "--name", BOX_NAME, str(tmp_path / "built.box")] in calls

    calls.clear()
    (added / "metadata.json").write_text(json.dumps(box_metadata(key=box.box_key())))
    assert box.ensure_box(lambda message: None) == BOX_NAME
    assert [c[:3] for c in calls] == [["vagrant", "box", "list"]]  # this recipe's box: reused as it is


def test_the_box_is_key_only_with_one_host_key_made_at_first_boot(tmp_path):
    (tmp_path / "etc/ssh").mkdir(parents=True)
    (tmp_path / "etc/ssh/ssh_host_rsa_key").write_text("built-in key")
    box._ssh_host_keys_at_first_boot(tmp_path)
    assert not list((tmp_path / "etc/ssh").glob("ssh_host_*"))
    config = (tmp_path / "etc/ssh/sshd_config.d/lab.conf").read_text()
    assert "PasswordAuthentication no" in config and "HostKey /etc/ssh/ssh_host_ed25519_key" in config
    unit = (tmp_path / "etc/systemd/system/ssh.service.d/lab-host-keys.conf").read_text()
    assert "ssh-keygen -q -t ed25519" in unit and "ssh-keygen -A" not in unit


def test_box_vagrantfile_sets_libvirt_defaults_only():
    text = box_vagrantfile()
    assert text.startswith('Vagrant.configure("2") do |config|')
    assert 'libvirt.driver = "qemu"' in text
    assert 'libvirt.disk_bus = "virtio"' in text
    assert text.count("do |") == text.count("end\n")
    assert "config.vm.box" not in text  # a box never names itself


def test_grub_boots_the_labelled_root_with_eth0_and_a_serial_console():
    cfg = grub_cfg()
    assert f"root=LABEL={box.ROOT_LABEL}" in cfg
    assert "net.ifnames=0" in cfg and "console=ttyS0" in cfg
    assert "linux /vmlinuz" in cfg and "initrd /initrd.img" in cfg


def test_box_key_changes_with_the_recipe(monkeypatch):
    monkeypatch.setattr(box, "machine_ca_certificates", lambda: [])
    before = box.box_key()
    assert before == box.box_key()
    monkeypatch.setattr(box, "RECIPE_VERSION", box.RECIPE_VERSION + "x")
    assert box.box_key() != before


def test_box_key_changes_with_the_machine_cas(monkeypatch, tmp_path):
    monkeypatch.setattr(box, "machine_ca_certificates", lambda: [])
    plain = box.box_key()
    cert = tmp_path / "corp.crt"
    cert.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    monkeypatch.setattr(box, "machine_ca_certificates", lambda: [cert])
    assert box.box_key() != plain


def test_only_a_complete_box_of_this_recipe_is_reused(monkeypatch, tmp_path):
    monkeypatch.setattr(box, "machine_ca_certificates", lambda: [])
    final, stamp = tmp_path / box.BOX_FILE, tmp_path / box.STAMP_FILE
    assert not box._complete(final, stamp)
    final.write_bytes(b"tar")
    assert not box._complete(final, stamp)  # no stamp: an older or interrupted build
    stamp.write_text(json.dumps({"key": "other"}))
    assert not box._complete(final, stamp)
    stamp.write_text(json.dumps({"key": box.box_key()}))
    assert box._complete(final, stamp)
    stamp.write_text("not json")
    assert not box._complete(final, stamp)


def test_box_paths_follow_the_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path))
    final, kernel, initrd = box.box_paths()
    assert final == tmp_path / "boxes" / "debian12-libvirt.box"
    assert kernel.parent == initrd.parent == final.parent
    assert box.box_paths(Path("/elsewhere"))[0] == Path("/elsewhere/boxes/debian12-libvirt.box")


def test_listed_boxes_reads_vagrants_machine_readable_list():
    text = (
        "1795841430,,ui,info,lab/debian12 (libvirt%!(VAGRANT_COMMA) 0)\n"
        "1795841430,,box-name,lab/debian12\n1795841430,,box-provider,libvirt\n1795841430,,box-version,0\n"
        "1795841430,,box-name,debian/bookworm64\n1795841430,,box-provider,virtualbox\n1795841430,,box-version,12.2\n"
    )
    assert listed_boxes(text) == {(BOX_NAME, "libvirt"), ("debian/bookworm64", "virtualbox")}
    assert listed_boxes("1795841287,,ui,warn,There are no installed boxes! Use `vagrant box add` to add some.\n") == set()


def test_box_volumes_are_found_by_vagrant_libvirts_name_and_backing():
    name = "lab-VAGRANTSLASH-debian12_vagrant_box_image_0_1795841429_box.img"
    assert name.startswith(box.box_volume_prefix())
    overlay = (
        "<volume type='file'><name>lab-web1.img</name><target><path>/var/lib/libvirt/images/lab-web1.img</path></target>"
        f"<backingStore><path>/var/lib/libvirt/images/{name}</path><format type='qcow2'/></backingStore></volume>"
    )
    assert box.backing_paths(overlay) == {f"/var/lib/libvirt/images/{name}"}
    assert box.backing_paths("<volume type='file'><name>x</name></volume>") == set()
    assert box.backing_paths("") == set()


@pytest.mark.parametrize("returncode", [1, -6, None])
def test_qemu_aborting_on_an_msr_means_software_emulation(returncode):
    assert classify_boot_output(MSR_ABORT, returncode) == "qemu"


def test_a_kernel_panicking_for_want_of_a_root_disk_proves_kvm():
    assert classify_boot_output(PANIC_NO_ROOT, 0) == "kvm"


def test_reaching_init_proves_kvm_even_when_killed():
    assert classify_boot_output("[    2.268393] Run /init as init process\n", None) == "kvm"


@pytest.mark.parametrize("text", ["", EARLY_HANG])
def test_no_output_or_a_hang_in_early_boot_means_software_emulation(text):
    assert classify_boot_output(text, None) == "qemu"


def test_driver_cache_key_names_the_kernel_and_qemu():
    key = driver_cache_key("6.18.44-fc\n", "QEMU emulator version 7.2.22  (Debian 1:7.2+dfsg-7)")
    assert key == "6.18.44-fc|QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7)"
    assert key != driver_cache_key("6.1.0-50-amd64", "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7)")
    assert key != driver_cache_key("6.18.44-fc", "QEMU emulator version 8.2.0")


def test_cached_driver_is_used_only_for_the_same_key():
    assert cached_driver({"key": "k", "driver": "kvm"}, "k") == "kvm"
    assert cached_driver({"key": "k", "driver": "qemu"}, "k") == "qemu"
    assert cached_driver({"key": "old", "driver": "kvm"}, "k") is None
    assert cached_driver({"key": "k", "driver": "xen"}, "k") is None
    assert cached_driver({}, "k") is None


def test_pick_qemu_driver_uses_the_cache_without_booting(monkeypatch, tmp_path):
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(libvirt, "_kvm_usable", lambda: True)
    monkeypatch.setattr(libvirt, "_qemu_version", lambda: "QEMU emulator version 7.2.22")
    monkeypatch.setattr(libvirt.platform, "release", lambda: "6.1.0-test")
    boots = []

    def boot(kernel, initrd):
        boots.append(kernel)
        return PANIC_NO_ROOT, 0

    monkeypatch.setattr(libvirt, "_kvm_boot_test", boot)
    said = []
    assert libvirt.pick_qemu_driver(Path("/k"), None, said.append) == "kvm"
    assert libvirt.pick_qemu_driver(Path("/k"), None, said.append) == "kvm"
    assert len(boots) == 1
    cache = json.loads((tmp_path / "libvirt-driver.json").read_text())
    assert cache == {"key": "6.1.0-test|QEMU emulator version 7.2.22", "driver": "kvm"}
    monkeypatch.setattr(libvirt.platform, "release", lambda: "6.1.0-newer")
    monkeypatch.setattr(libvirt, "_kvm_boot_test", lambda kernel, initrd: (MSR_ABORT, 1))
    assert libvirt.pick_qemu_driver(Path("/k"), None, said.append) == "qemu"


def test_pick_qemu_driver_without_a_usable_kvm_device_is_qemu(monkeypatch, tmp_path):
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(libvirt, "_kvm_usable", lambda: False)
    monkeypatch.setattr(libvirt, "_kvm_boot_test", lambda *a: pytest.fail("must not boot without /dev/kvm"))
    assert libvirt.pick_qemu_driver(Path("/k"), None, lambda _: None) == "qemu"
    assert not (tmp_path / "libvirt-driver.json").exists()


def test_bridge_is_read_from_virsh_net_info():
    text = "Name:           lab-lab\nUUID:           0b6f\nActive:         yes\nPersistent:     yes\nAutostart:      no\nBridge:         virbr1\n"
    assert libvirt.bridge_from_net_info(text) == "virbr1"
    assert libvirt.bridge_from_net_info("Name: x\nBridge:\n") is None
    assert libvirt.bridge_from_net_info("") is None


def test_leftovers_are_this_labs_domains_and_disks_only():
    domains = ["lab-web1", "lab-db1", "lab-foo-web1", "other-web1", "lab-"]
    assert libvirt.leftover_domains(domains, "lab-") == ["lab-web1", "lab-db1"]
    volumes = [
        "lab-web1.img", "lab-web1-vdb.qcow2", "lab-foo-web1.img", "lab-db1.iso",
        "lab-VAGRANTSLASH-debian12_vagrant_box_image_0_1795841429_box.img", "boxtest-default.img",
    ]
    assert libvirt.leftover_volumes(volumes, "lab-") == ["lab-web1.img", "lab-web1-vdb.qcow2"]
    assert libvirt.leftover_volumes(volumes, "lab-foo-") == ["lab-foo-web1.img"]
