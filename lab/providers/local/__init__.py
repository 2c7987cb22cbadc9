"""The local provider: Debian 12 hosts as systemd-nspawn machines on overlayfs, one network namespace each."""

from __future__ import annotations

import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lab.errors import LabBusy, ProviderError
from lab.files import write_atomically
from lab.hosts import HostFacts, SshEndpoint
from lab.machine import network
from lab.machine.paths import cache_root, data_root, short_id
from lab.providers.base import CachePart, Provider
from lab.providers.local import cpus as cpus_module, machines, proxy, snapshots
from lab.machine.debian_rootfs import SUITE
from lab.providers.local.rootfs import COMPLETE_MARKER, ensure_rootfs, rootfs_key
from lab.state import LabDir
from lab.machine_packages import ensure_feature
from lab.progress import elapsed
from lab.system import Say, require_root
from lab.topology import Topology

WHEELS_IN_HOST = "/var/cache/lab/wheels"
# A host whose nspawn was killed from outside: its processes still run, unsupervised; not running until `lab up`.
ORPHANED = "orphaned (nspawn killed)"


class LocalProvider(Provider):
    name = "local"

    def plan(self, topology: Topology, labdir: LabDir) -> dict[str, Any]:
        """Every machine resource this lab will own, named before any is made (so any can be cleaned up)."""
        lab_id = short_id(topology.name)
        root = data_root() / topology.name
        hosts = {
            h.name: asdict(machines.MachineSpec(
                name=h.name, ip=h.ip, memory_mb=h.memory_mb, root=str(root / "hosts" / h.name),
                netns=f"lab-{topology.name}-{h.name}", veth=f"lv{short_id(topology.name, h.name)}",
                cgroup=f"lab-{topology.name}/{h.name}", console_log=str(labdir.logs / f"{h.name}.console.log"), machine=f"{topology.name}-{h.name}",
            ))
            for h in topology.hosts
        }
        return {
            "bridge": f"lab{lab_id}",
            "subnet": topology.subnet,
            "gateway": topology.gateway,
            "root": str(root),
            "proxy_run": str(root / "proxy"),
            "proxy_cache": str(cache_root() / "squid" / topology.name),
            "hosts": hosts,
        }

    def preflight(self, topology: Topology, labdir: LabDir, say: Say) -> None:
        require_root("the local provider")
        ensure_feature("local", say)  # lab/machine-packages.toml
        _disable_packaged_squid()
        _ensure_inotify_instances(say)
        root = data_root() / topology.name
        owner_file = root / "owner"
        if owner_file.exists():
            owner = Path(owner_file.read_text().strip())
            if owner != labdir.path.resolve():
                if (owner / "state.json").exists():
                    raise LabBusy(
                        f"lab name {topology.name!r} is in use by {owner}; set another with LAB_NAME or [lab] name in lab.toml"
                    )
                # Its lab directory is gone (a deleted checkout, a test's temporary folder): clean up after it.
                say(f"removing a stale lab {topology.name!r} left behind by {owner}")
                recorded = root / "resources.json"
                destroy_resources(json.loads(recorded.read_text()) if recorded.exists() else {"root": str(root)}, say)
        network.check_subnet_free(topology.subnet, f"lab{short_id(topology.name)}")

    def facts(self, topology: Topology) -> HostFacts:
        return HostFacts(proxy_url=f"http://{topology.gateway}:{proxy.PORT}", wheelhouse=WHEELS_IN_HOST,
                         control_address=topology.gateway)

    def cache_parts(self, topology: Topology) -> list[CachePart]:
        return [
            CachePart("rootfs", f"the Debian {SUITE} root filesystem", f"rootfs/{rootfs_key()}", COMPLETE_MARKER),
            # squid's own cache (its swap.state is the index of what it holds): Debian's packages as the hosts fetched them
            CachePart("packages", "the Debian packages the hosts install (the lab proxy's cache)",
                      f"squid/{topology.name}", "swap.state", owner="proxy:proxy"),
        ]

    def up(self, topology: Topology, labdir: LabDir, state: dict[str, Any], say: Say,
           offline: bool = False) -> list[SshEndpoint]:
        previous = state.get("resources") or {}
        resources = self.plan(topology, labdir)
        # Record hosts being removed too, until they are gone, so an interrupted shrink is still cleaned up.
        dropped = {n: s for n, s in previous.get("hosts", {}).items() if n not in resources["hosts"]}
        state["resources"] = dict(resources, hosts={**dropped, **resources["hosts"]})
        labdir.write(state)
        root = Path(resources["root"])
        root.mkdir(parents=True, exist_ok=True)
        (root / "owner").write_text(str(labdir.path.resolve()) + "\n")
        # Whole or not at all: a later `lab up` of another folder reads it to clean up after this lab.
        write_atomically(root / "resources.json", json.dumps(state["resources"], indent=2), mode=0o644)

        for name, spec in dropped.items():
            say(f"removing {name} (no longer in the topology)")
            _remove_host(machines.MachineSpec(**spec))
        state["resources"] = resources
        labdir.write(state)
        write_atomically(root / "resources.json", json.dumps(resources, indent=2), mode=0o644)

        cache_root().mkdir(parents=True, exist_ok=True)
        cache_root().chmod(0o755)  # squid runs as `proxy` and must reach its cache folder below this one
        rootfs = ensure_rootfs(say)
        network.ensure_bridge(resources["bridge"], resources["gateway"], resources["subnet"])
        proxy.ensure_proxy(topology.name, resources["gateway"], resources["subnet"],
                           Path(resources["proxy_run"]), Path(resources["proxy_cache"]), offline=offline)
        wheels = cache_root() / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        public_key = labdir.ensure_key()
        booting: set[str] = set()  # hosts whose boot has begun and not yet answered SSH, for the "still" line

        def still_booting() -> str:
            waiting = sorted(booting.copy())  # one C call: the boot threads may add to it meanwhile
            return f"waiting for {', '.join(waiting)} to answer SSH" if waiting else ""

        def bring_up(host_name: str) -> SshEndpoint:
            spec = machines.MachineSpec(**resources["hosts"][host_name])
            machines.ensure_disk(spec, rootfs)
            host_key = machines.ensure_identity(spec, public_key)
            network.ensure_host_link(spec.netns, spec.veth, resources["bridge"], spec.ip, resources["subnet"])
            pid = machines.running_pid(spec)
            if pid is None:
                if machines.leftover_pids(spec):
                    # Its nspawn was killed from outside: the host's own processes run on unsupervised; a second
                    # boot on the same disk and netns beside them would fight them, so they go first.
                    progress(f"{host_name}: stopping what its killed nspawn left running")
                    machines.stop(spec)
                booting.add(host_name)
                progress(f"booting {host_name}")
                with elapsed(progress, f"booting {host_name}", f"{host_name} booted (SSH answers)", every=None):
                    pid = machines.boot(spec, {str(wheels): WHEELS_IN_HOST})
                    machines.wait_for_ssh(spec, pid)
            else:
                try:
                    machines.wait_for_ssh(spec, pid)
                except ProviderError:
                    # Running but deaf (a boot that went wrong, e.g. the machine ran out of inotify instances):
                    # what a VM's reset button does, once.
                    booting.add(host_name)
                    progress(f"{host_name} runs but does not answer SSH: booting it again")
                    with elapsed(progress, f"booting {host_name}", f"{host_name} booted (SSH answers)", every=None):
                        machines.stop(spec)
                        pid = machines.boot(spec, {str(wheels): WHEELS_IN_HOST})
                        machines.wait_for_ssh(spec, pid)
            booting.discard(host_name)
            return SshEndpoint(host=host_name, address=spec.ip, port=22, user="root",
                               identity_file=str(labdir.private_key), host_key=host_key)

        with elapsed(say, still_booting) as progress, ThreadPoolExecutor(max_workers=len(topology.hosts)) as pool:
            return list(pool.map(bring_up, [h.name for h in topology.hosts]))

    def status(self, labdir: LabDir, state: dict[str, Any]) -> dict[str, str]:
        result = {}
        for name, spec_data in (state.get("resources") or {}).get("hosts", {}).items():
            spec = machines.MachineSpec(**spec_data)
            if machines.running_pid(spec):
                result[name] = "running"
            elif machines.leftover_pids(spec):
                result[name] = ORPHANED
            elif Path(spec.root).exists():
                result[name] = "stopped"
            else:
                result[name] = "not created"
        for host in state["topology"]["hosts"]:
            result.setdefault(host["name"], "not created")
        return result

    def cpu_seconds(self, labdir: LabDir, state: dict[str, Any]) -> dict[str, float]:
        return {name: machines.cpu_seconds(machines.MachineSpec(**spec))
                for name, spec in (state.get("resources") or {}).get("hosts", {}).items()}

    def pin_cpus(self, project: Any, cpus: str | None) -> None:
        cpus_module.pin(project.labdir.read(), cpus)  # lab/providers/local/cpus.py

    # `lab reset --to-step K` (lab/workshop.py): copies of the hosts' overlay upper layers, in snapshots.py.
    def snapshot(self, project: Any, name: str) -> dict[str, float]:
        require_root("the local provider")
        return snapshots.snapshot(project.labdir.read(), name)

    def restore(self, project: Any, name: str, say: Say = lambda message: None) -> dict[str, float]:
        require_root("the local provider")
        state = project.labdir.read()
        topology = Topology.from_dict(state["topology"])
        return snapshots.restore(state, name, lambda: self.up(topology, project.labdir, state, say))

    def power_off(self, project: Any, host: str) -> None:
        require_root("the local provider")
        spec = project.labdir.read()["resources"]["hosts"][host]
        machines.stop(machines.MachineSpec(**spec))  # SIGKILL to every process of the host, its nspawn too

    def destroy(self, labdir: LabDir, state: dict[str, Any], say: Say) -> None:
        require_root("the local provider")
        destroy_resources(state.get("resources") or {}, say)
        cpus_module.pin(state, None)  # the lab's cpuset group, if a bench killed outright left it


def destroy_resources(resources: dict[str, Any], say: Say) -> None:
    """Remove every recorded resource; each step tolerates what an earlier, interrupted run removed."""
    hosts = [machines.MachineSpec(**spec) for spec in resources.get("hosts", {}).values()]
    if hosts:
        with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
            list(pool.map(_remove_host, hosts))
    if "proxy_run" in resources:
        proxy.stop_proxy(Path(resources["proxy_run"]))
    if "bridge" in resources:
        network.remove_bridge(resources["bridge"], resources["subnet"])
    if "root" in resources and Path(resources["root"]).exists():
        shutil.rmtree(resources["root"])
    say("removed hosts, network, proxy and disks")


def _remove_host(spec: machines.MachineSpec) -> None:
    machines.stop(spec)
    machines.remove(spec)
    network.remove_host_link(spec.netns, spec.veth)


INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")
# Each host's systemd holds a few inotify instances, all counted against root: Linux's default of 128 runs out
# at a few dozen hosts on one machine ("Failed to allocate manager object: Too many open files" as a host boots).
MIN_INOTIFY_INSTANCES = 1024


def _ensure_inotify_instances(say: Say) -> None:
    try:
        current = int(INOTIFY_INSTANCES.read_text())
        if current < MIN_INOTIFY_INSTANCES:
            INOTIFY_INSTANCES.write_text(str(MIN_INOTIFY_INSTANCES))
            say(f"raised fs.inotify.max_user_instances from {current} to {MIN_INOTIFY_INSTANCES} (hosts' systemd need them)")
    except (OSError, ValueError):
        pass  # a machine that refuses still boots a few hosts; a host that cannot start says why in its console log


def _disable_packaged_squid() -> None:
    """Debian's squid package starts a machine-wide proxy on every interface; the lab runs its own instead."""
    if Path("/run/systemd/system").exists():
        subprocess.run(["systemctl", "disable", "--now", "squid"], capture_output=True)
    elif Path("/run/squid.pid").exists():
        subprocess.run(["service", "squid", "stop"], capture_output=True)
