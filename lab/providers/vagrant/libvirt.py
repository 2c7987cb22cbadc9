"""libvirt for vagrant-libvirt: installed, its daemons running, and the QEMU driver (kvm or qemu) that truly boots."""

from __future__ import annotations

import grp
import json
import os
import platform
import re
import selectors
import shutil
import subprocess
import time
from pathlib import Path
from typing import Literal

from lab.errors import LibvirtDown, MissingDependency, VagrantMissing, VagrantProviderMissing, one_line
from lab.machine.paths import cache_root
from lab.providers.vagrant.driver import VAGRANT_INSTALL_FIX
from lab.machine_packages import ensure_feature, packages
from lab.progress import elapsed
from lab.system import Say, gist, run

Driver = Literal["kvm", "qemu"]

PLUGIN_PACKAGE = "vagrant-libvirt"  # its package in the manifest's feature "vagrant-libvirt" (lab/machine-packages.toml)
PLUGIN_MARKER = Path(next(iter(packages("vagrant-libvirt", only=[PLUGIN_PACKAGE]))))  # the file the manifest says proves it
SYSTEM_URI = "qemu:///system"
POOL = "default"  # vagrant-libvirt's storage pool unless a Vagrantfile names another
DAEMON_TIMEOUT = 30.0
BOOT_TEST_SECONDS = 20.0
# Lines a kernel prints only once the CPU has run it well past early boot; a panic for
# want of a root device counts, since reaching it already proves virtualization works.
BOOTED_MARKERS = (
    "Run /init",
    "Freeing unused kernel",
    "VFS: Cannot open root device",
    "VFS: Unable to mount root fs",
    "No working init found",
    "Attempted to kill init",
)


def ensure_libvirt(say: Say) -> None:
    """Install the manifest's features "vagrant" and "vagrant-libvirt" (vagrant-libvirt, libvirt, QEMU, dnsmasq for
    libvirt's NAT network...) where missing, and start libvirt's daemons when stopped."""
    try:
        ensure_feature("vagrant", say)
    except MissingDependency as error:
        raise VagrantMissing(f"vagrant is not installed and lab could not install it ({one_line(error)}); {VAGRANT_INSTALL_FIX}") from None
    if not _plugin_installed():
        try:
            ensure_feature("vagrant-libvirt", say, only=[PLUGIN_PACKAGE])
        except MissingDependency as error:
            raise VagrantProviderMissing(
                f"the Vagrant provider libvirt is not installed and lab could not install it ({one_line(error)}); "
                "install it: apt-get install vagrant-libvirt, or choose another with [vagrant] provider in lab.toml"
            ) from None
    # Not the plugin's package again: `vagrant plugin install vagrant-libvirt` is as good (see _plugin_installed).
    ensure_feature("vagrant-libvirt", say, without=[PLUGIN_PACKAGE])
    _kvm_device_for_libvirt(say)
    start_libvirt(say)


def require_libvirt() -> None:
    """LibvirtDown, naming the fix, unless libvirtd answers (for commands that only look, like `lab status`)."""
    if not _libvirt_answers():
        raise LibvirtDown(
            "libvirtd is not running: start it (`virtlogd -d && libvirtd -d`, or `systemctl start libvirtd`), "
            "or run `lab up`, which starts it"
        )


def start_libvirt(say: Say) -> None:
    """libvirt's daemons running (started by hand where PID 1 is not systemd), or LibvirtDown naming the fix."""
    if _libvirt_answers():
        return
    if Path("/run/systemd/system").is_dir():
        say("starting libvirtd")
        run(["systemctl", "start", "libvirtd", "virtlogd"], check=False)
    else:
        # No systemd to start them (containers, CI): run the daemons by hand, each forking into the background.
        for daemon in ("virtlogd", "libvirtd"):
            if run(["pgrep", "-x", daemon], check=False).returncode != 0:
                say(f"starting {daemon}")
                run([daemon, "-d"], check=False)
    _wait_for_libvirt()


def _kvm_device_for_libvirt(say: Say) -> None:
    """Give /dev/kvm the group and mode udev gives it on a normal Debian machine (root:kvm 0660).

    Without udev it stays root-only: libvirtd then finds KVM unusable for its QEMU user yet probes QEMU with
    KVM as root, judges its capability cache stale on every call and re-probes QEMU each time, which made
    one `vagrant up` take 165 s instead of 53 s here. The VMs still use the driver pick_qemu_driver chose.
    """
    try:
        kvm_gid = grp.getgrnam("kvm").gr_gid
        device = os.stat("/dev/kvm")
    except (KeyError, OSError):
        return
    if device.st_gid == kvm_gid and device.st_mode & 0o060 == 0o060:
        return
    say("letting libvirt's QEMU user open /dev/kvm (group kvm, mode 0660, as udev would)")
    os.chown("/dev/kvm", -1, kvm_gid)
    os.chmod("/dev/kvm", 0o660)


def _plugin_installed() -> bool:
    if PLUGIN_MARKER.exists():
        return True
    listed = run(["vagrant", "plugin", "list"], check=False, timeout=120)
    return "vagrant-libvirt" in listed.stdout


def _virsh_version() -> subprocess.CompletedProcess[str]:
    return run(["virsh", "-c", SYSTEM_URI, "version"], check=False, timeout=15)


def _libvirt_answers() -> bool:
    return _virsh_version().returncode == 0


def _wait_for_libvirt() -> None:
    deadline = time.monotonic() + DAEMON_TIMEOUT
    while True:
        result = _virsh_version()
        if result.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise LibvirtDown(
                f"libvirtd is not running and did not start ({gist(result.stderr or result.stdout)}): "
                "start it (`virtlogd -d && libvirtd -d`, or `systemctl start libvirtd virtlogd`), see its log in /var/log/libvirt"
            )
        time.sleep(1)


def classify_boot_output(text: str, returncode: int | None) -> Driver:
    """"kvm" when a KVM boot test's serial output shows the kernel got well into boot, else "qemu".

    returncode is QEMU's exit status, or None when it was still running (hung) and had to be killed;
    neither decides on its own: a kernel that panics for want of a root disk exits 0 and proves KVM works,
    while QEMU aborting on an MSR it cannot set ("failed to set MSR 0x10a") or hanging early does not.
    """
    del returncode  # kept for the record: only what the kernel printed tells how far it got
    return "kvm" if any(marker in text for marker in BOOTED_MARKERS) else "qemu"


def driver_cache_key(host_kernel: str, qemu_version: str) -> str:
    """What the boot test's verdict depends on: the machine's KVM (its kernel) and the QEMU that drives it."""
    return f"{host_kernel.strip()}|{' '.join(qemu_version.split())}"


def cached_driver(cache: dict[str, object], key: str) -> Driver | None:
    """The verdict recorded for this key, or None when there is none (or it was for another kernel or QEMU)."""
    driver = cache.get("driver")
    if cache.get("key") == key and driver in ("kvm", "qemu"):
        return driver  # type: ignore[return-value]
    return None


def pick_qemu_driver(kernel: Path, initrd: Path | None, say: Say) -> Driver:
    """The libvirt domain type VMs should use here: "kvm" only if a real KVM boot of `kernel` works, cached."""
    if not _kvm_usable():
        return "qemu"
    key = driver_cache_key(platform.release(), _qemu_version())
    driver = _recorded_driver(key)
    if driver is not None:
        return driver
    say("testing whether KVM boots a kernel here (up to 20 s, once)")
    with elapsed(say, "testing whether KVM boots a kernel", "KVM boot test done"):
        text, returncode = _kvm_boot_test(kernel, initrd)
    driver = classify_boot_output(text, returncode)
    if driver == "qemu":
        say("KVM cannot boot a VM here; VMs will use QEMU's (slower) software emulation")
    cache_file = _driver_cache_file()
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    cache_file.write_text(json.dumps({"key": key, "driver": driver}) + "\n")
    return driver


def boot_test_due() -> bool:
    """Whether pick_qemu_driver would boot a kernel now: KVM is there and no verdict is recorded for this kernel and QEMU."""
    return _kvm_usable() and _recorded_driver(driver_cache_key(platform.release(), _qemu_version())) is None


def _driver_cache_file() -> Path:
    return cache_root() / "libvirt-driver.json"


def _recorded_driver(key: str) -> Driver | None:
    try:
        cache = json.loads(_driver_cache_file().read_text())
    except (OSError, ValueError):
        return None
    return cached_driver(cache if isinstance(cache, dict) else {}, key)


def _kvm_usable() -> bool:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def _qemu_version() -> str:
    lines = run(["qemu-system-x86_64", "--version"]).stdout.splitlines()
    return lines[0] if lines else "unknown"


def _kvm_boot_test(kernel: Path, initrd: Path | None) -> tuple[str, int | None]:
    """Boot the kernel under KVM, reading its serial console until it proves itself, QEMU exits, or time runs out."""
    qemu = shutil.which("qemu-system-x86_64") or "qemu-system-x86_64"
    args = [
        qemu, "-enable-kvm", "-cpu", "host", "-m", "256", "-nographic", "-no-reboot",
        "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1",
    ]
    if initrd is not None:
        args[-2:-2] = ["-initrd", str(initrd)]
    # Popen rather than lab.system.run: the output must be read as it comes and QEMU stopped early.
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    output = bytearray()
    deadline = time.monotonic() + BOOT_TEST_SECONDS
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            while (left := deadline - time.monotonic()) > 0:
                if not selector.select(timeout=min(left, 1.0)):
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break  # QEMU exited
                output += chunk
                if classify_boot_output(output.decode(errors="replace"), None) == "kvm":
                    break
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    text = output.decode(errors="replace")
    return text, proc.returncode if proc.returncode is not None and proc.returncode >= 0 else None


def network_bridge(name: str) -> str | None:
    """The bridge device of libvirt network `name`, or None while the network does not exist."""
    result = run(["virsh", "-c", SYSTEM_URI, "net-info", name], check=False, timeout=30)
    return bridge_from_net_info(result.stdout) if result.returncode == 0 else None


def bridge_from_net_info(text: str) -> str | None:
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Bridge" and value.strip():
            return value.strip()
    return None


def leftover_domains(names: list[str], prefix: str) -> list[str]:
    """The lab's own domains among libvirt's: prefix then one host name (lb1, web2, ...), never another lab's."""
    pattern = re.compile(re.escape(prefix) + r"[A-Za-z0-9]+")
    return [name for name in names if pattern.fullmatch(name)]


def leftover_volumes(names: list[str], prefix: str) -> list[str]:
    """The lab's VM disks in the pool (<domain>.img, extra disks <domain>-vdb.qcow2), never a box image volume."""
    pattern = re.compile(re.escape(prefix) + r"[A-Za-z0-9]+(-[vsh]d[a-z]+)?\.(img|qcow2|raw)")
    return [name for name in names if pattern.fullmatch(name) and "_vagrant_box_image_" not in name]


def remove_leftovers(domain_prefix: str, network: str, say: Say) -> None:
    """After `vagrant destroy`: remove any of the lab's domains, disks and its network that libvirt still has."""
    if not _libvirt_answers():
        return  # nothing can be left in a libvirt that is not running, nor be removed from it
    listed = run(["virsh", "-c", SYSTEM_URI, "list", "--all", "--name"], check=False).stdout.split()
    for domain in leftover_domains(listed, domain_prefix):
        say(f"removing leftover VM {domain}")
        run(["virsh", "-c", SYSTEM_URI, "destroy", domain], check=False)
        run(["virsh", "-c", SYSTEM_URI, "undefine", domain, "--nvram"], check=False)
    volumes = run(["virsh", "-c", SYSTEM_URI, "vol-list", POOL, "--details"], check=False)
    names = [f[0] for f in (line.split() for line in volumes.stdout.splitlines()) if len(f) >= 2 and f[1].startswith("/")]
    for volume in leftover_volumes(names, domain_prefix):
        say(f"removing leftover disk {volume}")
        run(["virsh", "-c", SYSTEM_URI, "vol-delete", volume, "--pool", POOL], check=False)
    if network_bridge(network) is not None:
        say(f"removing libvirt network {network}")
        run(["virsh", "-c", SYSTEM_URI, "net-destroy", network], check=False)
        run(["virsh", "-c", SYSTEM_URI, "net-undefine", network], check=False)


def network_connections(network_xml: str) -> int:
    """How many running VMs use a libvirt network, from its XML (`<network connections='N'>`, absent when none)."""
    match = re.search(r"<network\b[^>]*\bconnections=['\"](\d+)['\"]", network_xml)
    return int(match.group(1)) if match else 0


def remove_unused_network(network: str, say: Say) -> None:
    """Remove a libvirt network no running VM uses (Vagrant's management network, once lab's VMs are gone)."""
    if network_bridge(network) is None:
        return
    xml = run(["virsh", "-c", SYSTEM_URI, "net-dumpxml", network], check=False).stdout
    if network_connections(xml):
        return  # another Vagrant project's VMs still use it
    say(f"removing libvirt network {network}")
    run(["virsh", "-c", SYSTEM_URI, "net-destroy", network], check=False)
    run(["virsh", "-c", SYSTEM_URI, "net-undefine", network], check=False)
