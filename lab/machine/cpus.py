"""The machine's cores split between the lab's hosts and the load generator, as a separate load machine would be."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from lab.errors import ProviderError, UsageError
from lab.remote import RemoteHost

# Below this many cores a split would leave one side with nothing: the hosts and the generator share.
MIN_CORES_TO_SPLIT = 2
# /proc/stat's first line: user nice system idle iowait irq softirq steal (guest time is counted in user already).
IDLE_FIELDS = (3, 4)
BUSY_FIELDS = (0, 1, 2, 5, 6, 7)


@dataclass(frozen=True)
class CpuSplit:
    """Two disjoint cpulists (as in taskset and cpuset.cpus, e.g. "0" and "1-3"): the lab's hosts, the generator."""

    hosts: str
    generator: str

    def describe(self) -> str:
        return f"lab hosts on CPU {self.hosts}, load generator (Locust, wrk) on CPU {self.generator}"


def parse_cpulist(text: str, where: str = "cpulist") -> list[int]:
    """"0,2-3" → [0, 2, 3]; a one-line UsageError for anything else."""
    cpus: set[int] = set()
    try:
        for part in str(text).replace(" ", "").split(","):
            first, _, last = part.partition("-")
            low, high = int(first), int(last or first)
            if low < 0 or high < low:
                raise ValueError(part)
            cpus.update(range(low, high + 1))
    except ValueError:
        raise UsageError(f"{where} must be a list of CPU numbers like \"1\" or \"2-3\" or \"1,3\" (got {text!r})") from None
    return sorted(cpus)


def format_cpulist(cpus: list[int]) -> str:
    """[0, 2, 3] → "0,2-3"."""
    ordered = sorted(set(cpus))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def machine_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity, not the whole machine's count)."""
    return sorted(os.sched_getaffinity(0))


def plan_split(generator_cpus: str | None, shared: bool, cores: int | None = None) -> CpuSplit | None:
    """The split for a bench: None when asked to share (--shared-cpus) or with fewer than 2 cores.

    Without `[bench] generator_cpus` the generator gets the last quarter of the cores (at least one): Locust's
    master and wrk each use one process; the servers need the rest.
    """
    available = list(range(cores)) if cores is not None else machine_cpus()
    if shared or len(available) < MIN_CORES_TO_SPLIT:
        return None
    if generator_cpus is None:
        generator = available[-max(1, len(available) // 4):]
    else:
        generator = parse_cpulist(generator_cpus, "[bench] generator_cpus")
        unknown = sorted(set(generator) - set(available))
        if unknown:
            raise UsageError(f"[bench] generator_cpus names CPU {format_cpulist(unknown)}, which this machine does "
                             f"not offer (CPUs {format_cpulist(available)})")
    hosts = [cpu for cpu in available if cpu not in generator]
    if not hosts:
        raise UsageError(f"[bench] generator_cpus {generator_cpus!r} leaves no CPU for the lab's hosts; "
                         f"this machine has CPUs {format_cpulist(available)}")
    return CpuSplit(hosts=format_cpulist(hosts), generator=format_cpulist(generator))


def generator_prefix(split: CpuSplit | None) -> list[str]:
    """The argv prefix that runs a load generator (Locust, wrk) on its own CPUs; [] when they are shared."""
    return [] if split is None else ["taskset", "--cpu-list", split.generator]


@contextmanager
def hosts_pinned(provider: Any, project: Any, split: CpuSplit | None) -> Iterator[CpuSplit | None]:
    """The lab's hosts on the split's CPUs for the block; back on every CPU afterwards, whatever ends the block.

    `provider` is a lab.providers Provider, `project` a lab.lifecycle Project. Hosts booted inside the block (a bench
    switching the topology) are not pinned by it: pin again after the switch (`provider.pin_cpus` is idempotent).
    """
    if split is None:
        try:  # shared: every CPU, even if a bench killed outright (SIGKILL) left the hosts pinned
            provider.pin_cpus(project, None)
        except ProviderError:
            pass  # a provider that cannot pin has nothing pinned
        yield None
        return
    try:
        provider.pin_cpus(project, split.hosts)
        yield split
    finally:
        provider.pin_cpus(project, None)


def busy_seconds(proc_stat: str, ticks_per_second: int = 100) -> float:
    """CPU seconds spent busy since boot, all CPUs summed, from a host's /proc/stat (its first, "cpu" line)."""
    for line in proc_stat.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            values = [int(v) for v in fields[1:]]
            return sum(values[i] for i in BUSY_FIELDS if i < len(values)) / ticks_per_second
    raise ValueError("no aggregate cpu line in /proc/stat")


# What host_cpu_seconds runs on a host that the provider cannot see from outside (a VM): its ticks and their rate.
PROC_STAT_COMMAND = "getconf CLK_TCK && head -n 1 /proc/stat"


def parse_proc_stat_reply(reply: str) -> float:
    """busy_seconds from PROC_STAT_COMMAND's output."""
    first, _, rest = reply.strip().partition("\n")
    return busy_seconds(rest, int(first))


def cpu_seconds_over_ssh(labdir: Any, host_names: list[str]) -> dict[str, float]:
    """Each host's busy CPU seconds read from its own /proc/stat over SSH (hosts the provider cannot see into).

    `labdir` is the lab's lab.state.LabDir. A host that does not answer is left out, as a provider that cannot tell.
    """
    def read(name: str) -> tuple[str, float | None]:
        host = RemoteHost(labdir, name)
        try:
            result = host.run(PROC_STAT_COMMAND, timeout=15)
            return name, parse_proc_stat_reply(result.stdout) if result.ok else None
        except Exception:  # an unreachable host: no figure for it rather than no figures at all
            return name, None
        finally:
            host.close()

    if not host_names:
        return {}
    with ThreadPoolExecutor(max_workers=len(host_names)) as pool:
        return {name: seconds for name, seconds in pool.map(read, host_names) if seconds is not None}
