"""Unit tests for the generator's own cores: the split, the argv prefix, pinning that always comes undone, the
[bench] table, per-host CPU from /proc/stat, the local cpuset (on this machine's real cgroups) and virsh pinning."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from lab.errors import ProviderError, TopologyError, UsageError
from lab.machine import cpus
from lab.machine.cpus import CpuSplit, generator_prefix, hosts_pinned, plan_split
from lab.providers.local import cpus as local_cpus, machines
from lab.providers.vagrant import cpus as vm_cpus
from lab.topology import bench_generator_cpus, resolve


def test_two_cores_split_one_each_and_the_report_says_so():
    split = plan_split(None, shared=False, cores=2)
    assert split == CpuSplit(hosts="0", generator="1")
    assert split.describe() == "lab hosts on CPU 0, load generator (Locust, wrk) on CPU 1"


def test_more_cores_give_the_generator_a_quarter_and_the_hosts_the_rest():
    assert plan_split(None, shared=False, cores=8) == CpuSplit(hosts="0-5", generator="6-7")
    assert plan_split(None, shared=False, cores=3) == CpuSplit(hosts="0-1", generator="2")


def test_shared_or_a_single_core_means_no_split():
    assert plan_split(None, shared=True, cores=8) is None
    assert plan_split("1", shared=True, cores=8) is None
    assert plan_split(None, shared=False, cores=1) is None


def test_generator_cpus_sets_the_split():
    assert plan_split("0,3", shared=False, cores=4) == CpuSplit(hosts="1-2", generator="0,3")


@pytest.mark.parametrize("value, message", [
    ("5", "does not offer"), ("0-3", "leaves no CPU"), ("a", "list of CPU numbers"), ("3-1", "list of CPU numbers"),
])
def test_a_wrong_generator_cpus_is_one_clear_error(value, message):
    with pytest.raises(UsageError, match=message):
        plan_split(value, shared=False, cores=4)


def test_cpulists_read_and_write_back():
    assert cpus.parse_cpulist("0,2-4, 7") == [0, 2, 3, 4, 7]
    assert cpus.format_cpulist([7, 0, 2, 3, 4]) == "0,2-4,7"
    assert cpus.format_cpulist([1]) == "1"


def test_the_prefix_runs_locust_and_wrk_on_the_generators_cpus_only():
    assert generator_prefix(None) == []
    prefix = generator_prefix(CpuSplit("0", "1"))
    assert prefix == ["taskset", "--cpu-list", "1"]
    if len(os.sched_getaffinity(0)) >= 2:  # the prefix really restricts a child
        shown = subprocess.run([*prefix, "grep", "Cpus_allowed_list", "/proc/self/status"], capture_output=True,
                               text=True, check=True).stdout
        assert shown.split()[-1] == "1"


class RecordingProvider:
    def __init__(self):
        self.calls = []

    def pin_cpus(self, project, cpus):
        self.calls.append(cpus)


def test_hosts_are_pinned_for_the_block_and_let_go_after_it_even_on_ctrl_c():
    provider = RecordingProvider()
    with hosts_pinned(provider, "project", CpuSplit("0", "1")) as split:
        assert split.hosts == "0" and provider.calls == ["0"]
    assert provider.calls == ["0", None]
    with pytest.raises(KeyboardInterrupt):
        with hosts_pinned(provider, "project", CpuSplit("0-2", "3")):
            raise KeyboardInterrupt
    assert provider.calls == ["0", None, "0-2", None]


def test_shared_cpus_pin_nothing_and_let_go_of_what_a_killed_bench_left():
    provider = RecordingProvider()
    with hosts_pinned(provider, "project", None) as split:
        assert split is None
    assert provider.calls == [None]


def test_shared_cpus_on_a_provider_that_cannot_pin_just_run():
    class CannotPin:
        def pin_cpus(self, project, cpus):
            raise ProviderError("cannot pin")

    with hosts_pinned(CannotPin(), "project", None) as split:
        assert split is None


def test_a_provider_that_cannot_pin_says_how_to_go_on():
    from lab.providers.base import Provider

    class Bare(Provider):
        name = "bare"
        preflight = up = facts = status = destroy = lambda *a: None

    with pytest.raises(ProviderError, match="--shared-cpus"):
        Bare().pin_cpus(None, "0")


def test_bench_table_takes_generator_cpus_and_nothing_else():
    assert bench_generator_cpus({}) is None
    assert bench_generator_cpus({"bench": {"generator_cpus": "1, 3"}}) == "1,3"
    assert resolve({"bench": {"generator_cpus": "1"}}, environ={}).name  # a valid table resolves
    with pytest.raises(TopologyError, match=r"\[bench\]: unknown key 'generator_cores'"):
        resolve({"bench": {"generator_cores": "1"}}, environ={})
    with pytest.raises(TopologyError, match="generator_cpus must be a CPU list"):
        resolve({"bench": {"generator_cpus": 1}}, environ={})
    with pytest.raises(TopologyError, match="generator_cpus must be a CPU list"):
        resolve({"bench": {"generator_cpus": "last"}}, environ={})


PROC_STAT = "cpu  100 20 30 1000 50 5 5 10 0 0\ncpu0 50 10 15 500 25 2 3 5 0 0\n"


def test_busy_seconds_count_everything_but_idle_and_iowait():
    assert cpus.busy_seconds(PROC_STAT, 100) == pytest.approx((100 + 20 + 30 + 5 + 5 + 10) / 100)
    assert cpus.parse_proc_stat_reply("250\n" + PROC_STAT.splitlines()[0]) == pytest.approx(170 / 250)
    with pytest.raises(ValueError):
        cpus.busy_seconds("intr 1 2 3\n")


def test_cpu_seconds_over_ssh_reads_each_host_and_leaves_out_one_that_does_not_answer(monkeypatch):
    class Reply:
        def __init__(self, ok, stdout):
            self.ok, self.stdout = ok, stdout

    class FakeHost:
        def __init__(self, labdir, name):
            self.name = name

        def run(self, command, timeout=None):
            assert command == cpus.PROC_STAT_COMMAND
            if self.name == "db1":
                raise OSError("no route to host")
            return Reply(True, "100\n" + PROC_STAT.splitlines()[0])

        def close(self):
            pass

    monkeypatch.setattr(cpus, "RemoteHost", FakeHost)
    assert cpus.cpu_seconds_over_ssh("labdir", ["lb1", "web1", "db1"]) == {"lb1": 1.7, "web1": 1.7}


def test_virsh_pins_the_labs_running_vms_emulator_and_every_vcpu_only():
    calls = []

    def virsh(*args):
        calls.append(args)
        if args[0] == "list":
            return "h2x-web1\nh2x-lb1\notherlab-web1\nh2x-web1-old\n"
        if args[0] == "vcpucount":
            return "2\n"
        return ""

    resources = {"vagrant_provider": "libvirt", "domain_prefix": "h2x-", "hosts": ["lb1", "web1"]}
    vm_cpus.pin(resources, "0", virsh)
    assert ("emulatorpin", "h2x-web1", "0", "--live") in calls
    assert ("vcpupin", "h2x-web1", "1", "0", "--live") in calls
    assert ("emulatorpin", "h2x-lb1", "0", "--live") in calls
    assert not any("otherlab-web1" in call or "h2x-web1-old" in call for call in calls)
    calls.clear()
    vm_cpus.pin(resources, None, virsh)  # back on every CPU of the machine
    every = cpus.format_cpulist(cpus.machine_cpus())
    assert ("emulatorpin", "h2x-lb1", every, "--live") in calls


def test_virtualbox_vms_cannot_be_pinned():
    with pytest.raises(ProviderError, match="--shared-cpus"):
        vm_cpus.pin({"vagrant_provider": "virtualbox"}, "0", lambda *a: "")


CPUSET_V1 = Path("/sys/fs/cgroup/cpuset")
PIDS_V1 = Path("/sys/fs/cgroup/pids")
real_v1 = pytest.mark.skipif(
    os.geteuid() != 0 or not (CPUSET_V1 / "cgroup.procs").exists() or not (PIDS_V1 / "cgroup.procs").exists()
    or (Path("/sys/fs/cgroup") / "cgroup.controllers").exists() or len(os.sched_getaffinity(0)) < 2,
    reason="needs root on a cgroup v1 machine with cpuset and pids hierarchies and 2 CPUs",
)


@real_v1
def test_a_local_labs_hosts_are_pinned_and_let_go_through_their_own_cpuset(tmp_path):
    """A stand-in host: a process in the host's own cgroup (pids hierarchy), as machines.boot puts nspawn."""
    lab_name = f"lab-h2unit{os.getpid()}"
    host_group = PIDS_V1 / lab_name / "web1"
    host_group.mkdir(parents=True)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (host_group / "cgroup.procs").write_text(str(sleeper.pid))
        state = {"resources": {"hosts": {"web1": {"cgroup": f"{lab_name}/web1"}}}}
        allowed = lambda: Path(f"/proc/{sleeper.pid}/status").read_text().split("Cpus_allowed_list:")[1].split()[0]  # noqa: E731
        local_cpus.pin(state, "1")
        assert allowed() == "1"
        assert (CPUSET_V1 / lab_name / "cpuset.cpus").read_text().strip() == "1"
        local_cpus.pin(state, "1")  # again: nothing to move, nothing breaks
        local_cpus.pin(state, None)
        assert allowed() == cpus.format_cpulist(cpus.machine_cpus())
        assert not (CPUSET_V1 / lab_name).exists()  # no group left behind
        local_cpus.pin(state, None)  # letting go twice is fine
    finally:
        sleeper.kill()
        sleeper.wait()
        if (CPUSET_V1 / lab_name).exists():
            for pid in (CPUSET_V1 / lab_name / "cgroup.procs").read_text().split():
                (CPUSET_V1 / "cgroup.procs").write_text(pid)
            (CPUSET_V1 / lab_name).rmdir()
        host_group.rmdir()
        host_group.parent.rmdir()


def test_a_lab_without_hosts_has_nothing_to_pin(monkeypatch, tmp_path):
    monkeypatch.setattr(machines, "CGROUP_ROOT", tmp_path)
    local_cpus.pin({"resources": {}}, "0")
    local_cpus.pin({}, None)
    assert list(tmp_path.iterdir()) == []


def test_a_machine_without_cpusets_says_to_share(monkeypatch, tmp_path):
    monkeypatch.setattr(machines, "CGROUP_ROOT", tmp_path)
    state = {"resources": {"hosts": {"web1": {"cgroup": "lab-x/web1"}}}}
    with pytest.raises(ProviderError, match="--shared-cpus"):
        local_cpus.pin(state, "0")
    local_cpus.pin(state, None)  # what `lab destroy` does: nothing pinned, nothing to let go


def test_cgroup_v2_restricts_the_labs_own_group_only(monkeypatch, tmp_path):
    monkeypatch.setattr(machines, "CGROUP_ROOT", tmp_path)
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("memory pids\n")
    (tmp_path / "lab-x" / "web1").mkdir(parents=True)
    (tmp_path / "lab-other").mkdir()
    (tmp_path / "lab-x" / "cpuset.cpus").write_text("\n")
    (tmp_path / "lab-other" / "cpuset.cpus").write_text("\n")
    state = {"resources": {"hosts": {"web1": {"cgroup": "lab-x/web1"}}}}
    local_cpus.pin(state, "0")
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+cpuset\n"  # what the kernel is told
    assert (tmp_path / "lab-x" / "cpuset.cpus").read_text() == "0\n"
    assert (tmp_path / "lab-other" / "cpuset.cpus").read_text() == "\n"
    local_cpus.pin(state, None)
    assert (tmp_path / "lab-x" / "cpuset.cpus").read_text() == "\n"


def test_letting_go_waits_out_a_group_kept_busy_for_a_while(monkeypatch, tmp_path):
    # A zombie or a just-forked worker keeps a v1 cpuset busy for a moment: rmdir fails with EBUSY a few times.
    group = tmp_path / "lab-x"
    group.mkdir()
    busy = iter([True] * 8)
    real_rmdir = Path.rmdir

    def rmdir(path):
        if path == group and next(busy, False):
            raise OSError(16, "Device or resource busy")
        real_rmdir(path)

    monkeypatch.setattr(Path, "rmdir", rmdir)
    monkeypatch.setattr(local_cpus.time, "sleep", lambda seconds: None)
    local_cpus._release_v1(tmp_path, group)
    assert not group.exists()


def test_letting_go_of_a_group_busy_for_good_is_one_error(monkeypatch, tmp_path):
    group = tmp_path / "lab-x"
    group.mkdir()
    clock = iter(range(0, 1000))
    monkeypatch.setattr(local_cpus.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(local_cpus.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(Path, "rmdir", lambda path: (_ for _ in ()).throw(OSError(16, "busy")))
    with pytest.raises(ProviderError, match="processes keep appearing"):
        local_cpus._release_v1(tmp_path, group)
