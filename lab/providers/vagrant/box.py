"""`lab box build`: a Debian 12 box for vagrant-libvirt made here with debootstrap, nothing from Vagrant Cloud."""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from xml.etree import ElementTree

from lab.errors import BoxMissing, MissingDependency, ProviderError
from lab.files import write_atomically
from lab.machine import debian_rootfs
from lab.machine.debian_rootfs import SUITE, machine_ca_certificates
from lab.machine.paths import cache_root
from lab.providers.vagrant.driver import VagrantDriver
from lab.providers.vagrant.libvirt import POOL, SYSTEM_URI, Driver, boot_test_due, pick_qemu_driver
from lab.machine_packages import ensure_feature
from lab.progress import elapsed
from lab.system import Say, require_root, run

BOX_NAME = "lab/debian12"
BOX_FILE = "debian12-libvirt.box"
STAMP_FILE = "debian12-libvirt.json"  # written after the box: says which recipe built it
KERNEL_FILE = "debian12-vmlinuz"  # the box's kernel and initrd, kept for the KVM boot test
INITRD_FILE = "debian12-initrd.img"
RECIPE_VERSION = "4"  # bump when the build below changes, so an old box is neither reused nor left added
VIRTUAL_SIZE_GB = 20
ROOT_LABEL = "labroot"
PART_START = 1 << 20  # 1 MiB: sectors 1..2047 before it hold GRUB's core.img
GUEST_PACKAGES = (
    "linux-image-cloud-amd64", "systemd-sysv", "udev", "kmod", "dbus", "libpam-systemd",
    "ifupdown", "isc-dhcp-client", "iproute2", "netbase", "openssh-server", "sudo", "rsync",
    "python3", "python3-venv", "ca-certificates", "procps",  # python3-venv: as in the local provider's rootfs
)
GRUB_DIR = Path("/usr/lib/grub/i386-pc")
GRUB_MODULES = ("biosdisk", "part_msdos", "ext2", "normal", "linux", "serial", "terminal", "echo", "search")
KERNEL_ARGS = f"root=LABEL={ROOT_LABEL} ro console=tty0 console=ttyS0,115200 net.ifnames=0 biosdevname=0"
# Timers that would run apt behind the lab's recipes (holding dpkg's lock) or just add noise.
MASKED_UNITS = (
    "apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer", "fstrim.timer", "man-db.timer",
    "e2scrub_reap.service",  # half a minute of an emulated VM's boot, for LVM snapshots the box never has
)
# What dpkg leaves out in every VM: documentation and translations nobody reads on a lab host, and fewer files
# for an emulated CPU to unpack (copyright files stay).
DPKG_EXCLUDES = (
    "path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\n"
    "path-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\n"
    "path-exclude /usr/share/locale/*\npath-include /usr/share/locale/locale.alias\n"
)
# Key-only logins, as on every lab host, and one host key: RSA keys take an emulated VM many seconds to make.
SSHD_CONFIG = (
    "# lab: key-only logins; one host key (ed25519), made at first boot\n"
    "HostKey /etc/ssh/ssh_host_ed25519_key\n"
    "PasswordAuthentication no\n"
    "KbdInteractiveAuthentication no\n"
    "UseDNS no\n"
)
VAGRANT_KEY_GLOBS = (
    "/usr/share/vagrant/keys/vagrant.pub",
    "/usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub",
    "/opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant.pub",
    "/opt/vagrant/embedded/gems/vagrant-*/keys/vagrant.pub",
)


def box_metadata(virtual_size_gb: int = VIRTUAL_SIZE_GB, key: str = "") -> dict[str, object]:
    """metadata.json of a vagrant-libvirt box (format v1: one qcow2 disk named box.img), naming the recipe it came from.

    Vagrant keeps the file beside the added box, so lab can tell a box added from an older recipe (and replace it).
    """
    return {"provider": "libvirt", "format": "qcow2", "virtual_size": virtual_size_gb, "lab_box_key": key}


def box_vagrantfile() -> str:
    """The Vagrantfile inside the box: defaults a project's Vagrantfile may override."""
    return (
        'Vagrant.configure("2") do |config|\n'
        '  config.vm.provider :libvirt do |libvirt|\n'
        '    libvirt.driver = "qemu"\n'
        '    libvirt.disk_bus = "virtio"\n'
        "  end\n"
        "end\n"
    )


def grub_cfg() -> str:
    return (
        "serial --unit=0 --speed=115200\n"
        "terminal_input serial console\n"
        "terminal_output serial console\n"
        "set timeout=0\n"
        'menuentry "Debian 12 (lab)" {\n'
        f"  linux /vmlinuz {KERNEL_ARGS}\n"
        "  initrd /initrd.img\n"
        "}\n"
    )


def box_key() -> str:
    """What the built box depends on: this recipe and the machine's extra CAs (copied into the box)."""
    digest = hashlib.sha256(RECIPE_VERSION.encode())
    digest.update(" ".join(GUEST_PACKAGES).encode())
    digest.update(grub_cfg().encode())
    digest.update((DPKG_EXCLUDES + SSHD_CONFIG + " ".join(MASKED_UNITS)).encode())
    for cert in machine_ca_certificates():
        digest.update(cert.read_bytes())
    return digest.hexdigest()[:16]


def listed_boxes(machine_readable: str) -> set[tuple[str, str]]:
    """(name, provider) pairs from `vagrant box list --machine-readable`."""
    boxes: set[tuple[str, str]] = set()
    name = None
    for line in machine_readable.splitlines():
        fields = line.split(",", 3)
        if len(fields) < 4:
            continue
        kind, data = fields[2], fields[3].replace("%!(VAGRANT_COMMA)", ",").strip()
        if kind == "box-name":
            name = data
        elif kind == "box-provider" and name is not None:
            boxes.add((name, data))
    return boxes


def choose_driver(say: Say) -> Driver:
    """libvirt's pick_qemu_driver with the box's own kernel, building the box first only when a boot test is due."""
    _, kernel, initrd = box_paths()
    if boot_test_due() and not (kernel.is_file() and initrd.is_file()):
        build_box(say)
    return pick_qemu_driver(kernel, initrd, say)


def box_paths(cache_dir: Path | None = None) -> tuple[Path, Path, Path]:
    """The built box, and the kernel and initrd inside it (for pick_qemu_driver)."""
    boxes = (cache_dir or cache_root()) / "boxes"
    return boxes / BOX_FILE, boxes / KERNEL_FILE, boxes / INITRD_FILE


def ensure_box(say: Say, rebuild: bool = False) -> str:
    """BOX_NAME, added to Vagrant for libvirt, building the box file first when needed (or asked to)."""
    VagrantDriver.require_vagrant()
    listed = run(["vagrant", "box", "list", "--machine-readable"], timeout=120).stdout
    if not rebuild and (BOX_NAME, "libvirt") in listed_boxes(listed):
        if added_box_key() == box_key():
            return BOX_NAME
        say(f"the added {BOX_NAME} box comes from an older recipe: replacing it")
    final, _, _ = box_paths()
    if os.geteuid() != 0 and not (final.is_file() and _complete(final, final.parent / STAMP_FILE)):
        raise BoxMissing(f"the Vagrant box {BOX_NAME} is missing: build it once as root with `sudo lab box build`")
    box = build_box(say, force=rebuild)
    say(f"adding the box to Vagrant as {BOX_NAME}")
    with elapsed(say, f"adding the box to Vagrant as {BOX_NAME}", f"added the box as {BOX_NAME}"):
        run(["vagrant", "box", "add", "--force", "--name", BOX_NAME, str(box)], timeout=900)
    _drop_old_box_volumes(say)
    return BOX_NAME


def added_box_key() -> str | None:
    """The recipe key of the BOX_NAME Vagrant has added for libvirt (from the metadata.json Vagrant keeps)."""
    home = Path(os.environ.get("VAGRANT_HOME") or Path.home() / ".vagrant.d")
    metadata = home / "boxes" / BOX_NAME.replace("/", "-VAGRANTSLASH-") / "0" / "libvirt" / "metadata.json"
    try:
        return json.loads(metadata.read_text()).get("lab_box_key")
    except (OSError, ValueError, AttributeError):
        return None


def box_volume_prefix() -> str:
    """How vagrant-libvirt names the copy of BOX_NAME's disk it keeps in the storage pool (any version, any time)."""
    return BOX_NAME.replace("/", "-VAGRANTSLASH-") + "_vagrant_box_image_"


def _drop_old_box_volumes(say: Say) -> None:
    """Delete the pool copies of the box just replaced that no VM disk is still backed by.

    vagrant-libvirt names an unversioned box's volume after box.img's mtime, so a re-added box gets a new
    volume at the next `vagrant up` and the old one would stay in the pool for good.
    """
    listed = run(["virsh", "-c", SYSTEM_URI, "vol-list", POOL, "--details"], check=False)
    if listed.returncode != 0:
        return  # no pool yet, or libvirtd is not running: nothing was uploaded
    paths = {}
    for line in listed.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[1].startswith("/"):
            paths[fields[0]] = fields[1]
    backing = set()
    for name in paths:
        xml = run(["virsh", "-c", SYSTEM_URI, "vol-dumpxml", name, "--pool", POOL], check=False).stdout
        backing.update(backing_paths(xml))
    for name, path in paths.items():
        if name.startswith(box_volume_prefix()) and path not in backing:
            say(f"removing {name} from libvirt's {POOL} pool (an older copy of the box)")
            run(["virsh", "-c", SYSTEM_URI, "vol-delete", name, "--pool", POOL], check=False)


def backing_paths(volume_xml: str) -> set[str]:
    """The backing files a libvirt volume's XML names (a VM's disk names its box volume)."""
    try:
        root = ElementTree.fromstring(volume_xml)
    except ElementTree.ParseError:
        return set()
    return {p.text.strip() for p in root.findall("./backingStore/path") if p.text}


def build_box(say: Say, cache_dir: Path | None = None, force: bool = False) -> Path:
    """The box file, built once per recipe (under a lock) and reused while complete; force builds it anew."""
    require_root("lab box build")
    final, kernel, initrd = box_paths(cache_dir)
    boxes = final.parent
    boxes.mkdir(parents=True, exist_ok=True)
    with open(boxes / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and _complete(final, boxes / STAMP_FILE):
            return final
        ensure_feature("box-build", say)  # lab/machine-packages.toml
        for stale in boxes.glob(".build-*"):
            _remove_build_dir(stale)  # an earlier build was interrupted
        say(f"building the Debian {SUITE} Vagrant box (about 2 minutes; cached in {boxes})")
        with elapsed(say, f"building the Debian {SUITE} Vagrant box") as progress:
            work = Path(tempfile.mkdtemp(prefix=".build-", dir=boxes))
            try:
                rootfs = work / "rootfs"
                debian_rootfs.build(rootfs, GUEST_PACKAGES, MASKED_UNITS, "box", own_steps=_base_box, keep_apt_caches=True)
                _bootable(rootfs)
                shutil.copyfile(_in_root(rootfs, "vmlinuz"), work / KERNEL_FILE)
                shutil.copyfile(_in_root(rootfs, "initrd.img"), work / INITRD_FILE)
                disk = _make_disk(rootfs, work)
                box = _pack(disk, work)
                os.replace(work / KERNEL_FILE, kernel)
                os.replace(work / INITRD_FILE, initrd)
                # The box goes in whole, by one rename, and its stamp only after it: a build cut short
                # between the two leaves a box without a matching stamp, which is rebuilt, never reused.
                os.replace(box, final)
                write_atomically(boxes / STAMP_FILE, json.dumps({"key": box_key(), "box": BOX_FILE}) + "\n", mode=0o644)
                progress.done = f"built {final} ({final.stat().st_size >> 20} MiB)"
            finally:
                _remove_build_dir(work)
    return final


def _complete(box: Path, stamp: Path) -> bool:
    try:
        return box.is_file() and json.loads(stamp.read_text()).get("key") == box_key()
    except (OSError, ValueError, AttributeError):
        return False


def _remove_build_dir(work: Path) -> None:
    """Remove a build folder, first unmounting what debootstrap may have left mounted in it (never delete through a mount)."""
    for mount in sorted(_mounts_under(work), key=len, reverse=True):
        run(["umount", "-l", mount], check=False)
    if _mounts_under(work):
        raise ProviderError(f"cannot remove {work}: something is still mounted in it (unmount it, then retry)")
    shutil.rmtree(work, ignore_errors=True)


def _mounts_under(folder: Path) -> list[str]:
    mounted = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    return [m for m in mounted if m == str(folder) or m.startswith(f"{folder}/")]


def _vagrant_public_key() -> str:
    for pattern in VAGRANT_KEY_GLOBS:
        for path in sorted(glob.glob(pattern)):
            return Path(path).read_text().strip()
    raise MissingDependency("cannot find Vagrant's insecure public key (keys/vagrant.pub); reinstall: apt-get install --reinstall vagrant")


def _base_box(root: Path) -> None:
    """A Vagrant base box: the vagrant user with sudo and the insecure key, DHCP on eth0, fewer docs, key-only sshd."""
    (root / "etc/hostname").write_text("debian12\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\tdebian12\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    (root / "etc/default/locale").write_text("LANG=C.UTF-8\n")  # pam_env logs an error at each login without it
    (root / "etc/fstab").write_text(f"LABEL={ROOT_LABEL}\t/\text4\terrors=remount-ro\t0\t1\n")
    (root / "etc/network/interfaces").write_text(
        "source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n"
    )
    dpkg_cfg = root / "etc/dpkg/dpkg.cfg.d"
    dpkg_cfg.mkdir(parents=True, exist_ok=True)
    (dpkg_cfg / "lab-excludes").write_text(DPKG_EXCLUDES)  # before the build's upgrade, which it then applies to
    _ssh_host_keys_at_first_boot(root)
    _vagrant_user(root)


def _bootable(root: Path) -> None:
    """What a VM's disk needs beyond the rootfs: per-VM ids, and GRUB with its config booting the box's kernel."""
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)  # each VM makes its own (/etc/machine-id is emptied)
    grub = root / "boot/grub"
    shutil.copytree(GRUB_DIR, grub / "i386-pc", dirs_exist_ok=True)
    (grub / "grub.cfg").write_text(grub_cfg())
    for link in ("vmlinuz", "initrd.img"):
        _in_root(root, link)  # grub.cfg boots these


def _in_root(root: Path, link: str) -> Path:
    """The file the rootfs's /vmlinuz or /initrd.img points to, resolved inside the rootfs, not on this machine."""
    path = root / link
    if path.is_symlink():
        target = os.readlink(path)
        path = root / target.lstrip("/") if target.startswith("/") else root / target
    if not path.is_file():
        raise ProviderError(f"box: the rootfs has no /{link} (did linux-image-cloud-amd64 install?)")
    return path


def _ssh_host_keys_at_first_boot(root: Path) -> None:
    """Every VM from the box must get its own host keys, so none are shipped: ssh.service makes them."""
    debian_rootfs.remove_ssh_host_keys(root)
    (root / "etc/ssh/sshd_config.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/ssh/sshd_config.d/lab.conf").write_text(SSHD_CONFIG)
    dropin = root / "etc/systemd/system/ssh.service.d"
    dropin.mkdir(parents=True, exist_ok=True)
    # The empty line resets the unit's own `sshd -t`, which would fail before the key exists.
    (dropin / "lab-host-keys.conf").write_text(
        "[Service]\nExecStartPre=\n"
        "ExecStartPre=/bin/sh -c 'test -s /etc/ssh/ssh_host_ed25519_key || "
        "ssh-keygen -q -t ed25519 -N \"\" -f /etc/ssh/ssh_host_ed25519_key'\n"
        "ExecStartPre=/usr/sbin/sshd -t\n"
    )


def _vagrant_user(root: Path) -> None:
    debian_rootfs.chroot(root, "box", "useradd", "--create-home", "--shell", "/bin/bash", "--user-group", "vagrant")
    sudoers = root / "etc/sudoers.d/vagrant"
    sudoers.write_text("vagrant ALL=(ALL) NOPASSWD: ALL\n")
    sudoers.chmod(0o440)
    uid, gid = _ids(root, "vagrant")
    ssh_dir = root / "home/vagrant/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    keys = ssh_dir / "authorized_keys"
    keys.write_text(_vagrant_public_key() + "\n")  # Vagrant swaps it for a key of its own at first `vagrant up`
    keys.chmod(0o600)
    for path in (ssh_dir, keys):
        os.chown(path, uid, gid)


def _ids(root: Path, user: str) -> tuple[int, int]:
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2]), int(fields[3])
    raise ProviderError(f"box: user {user} was not created")


def _make_disk(root: Path, work: Path) -> Path:
    """A raw MBR disk: GRUB in its first MiB, then one ext4 partition made straight from the rootfs folder.

    No loop devices: they get no partition devices here, so every piece is written at its offset with dd.
    """
    size = VIRTUAL_SIZE_GB << 30
    part = work / "root.ext4"
    run([
        "mkfs.ext4", "-q", "-F", "-L", ROOT_LABEL, "-d", str(root),
        # Zero the inode tables now: lazy init would make every VM write them out at first boot.
        "-E", "lazy_itable_init=0,lazy_journal_init=0", str(part), f"{(size - PART_START) >> 10}k",
    ], timeout=900)
    disk = work / "disk.raw"
    with open(disk, "wb") as raw:
        raw.truncate(size)
    run(["sfdisk", "--quiet", str(disk)], input=f"label: dos\nstart={PART_START >> 9}, type=83, bootable\n")
    run(["dd", f"if={part}", f"of={disk}", "bs=1M", f"seek={PART_START >> 20}", "conv=notrunc,sparse", "status=none"], timeout=900)
    part.unlink()
    _install_grub(disk, work)
    return disk


def _install_grub(disk: Path, work: Path) -> None:
    """What grub-bios-setup does for a disk with room after the MBR, by hand.

    boot.img's code (not its partition table part) goes in the MBR; it loads sector 1 by default, where
    core.img goes whole. grub-mkimage already writes core.img's own length into its first sector's block
    list, which by default starts at sector 2, so a core.img laid contiguously from sector 1 needs no patch.
    """
    core = work / "core.img"
    run([
        "grub-mkimage", "-O", "i386-pc", "-o", str(core), "-p", "(hd0,msdos1)/boot/grub", *GRUB_MODULES,
    ])
    if core.stat().st_size > PART_START - 512:
        raise ProviderError(f"box: GRUB's core.img ({core.stat().st_size} bytes) does not fit before the partition")
    run(["dd", f"if={GRUB_DIR / 'boot.img'}", f"of={disk}", "bs=440", "count=1", "conv=notrunc", "status=none"])
    run(["dd", f"if={core}", f"of={disk}", "bs=512", "seek=1", "conv=notrunc", "status=none"])


def _pack(disk: Path, work: Path) -> Path:
    """The .box: a tar of metadata.json, Vagrantfile and the disk as compressed qcow2 (box.img)."""
    run(["qemu-img", "convert", "-c", "-O", "qcow2", str(disk), str(work / "box.img")], timeout=1800)
    disk.unlink()
    (work / "metadata.json").write_text(json.dumps(box_metadata(key=box_key()), indent=2) + "\n")
    (work / "Vagrantfile").write_text(box_vagrantfile())
    box = work / BOX_FILE
    # Plain tar: box.img is compressed already.
    run(["tar", "-cf", str(box), "-C", str(work), "metadata.json", "Vagrantfile", "box.img"], timeout=600)
    return box
