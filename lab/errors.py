"""The one exception family of lab, and the one place that maps it to exit codes."""

from __future__ import annotations


class LabError(Exception):
    """Something the user can act on; its message is one line, its exit code is stable."""

    exit_code = 1


class UsageError(LabError):
    """A wrong verb, flag or flag value the command line itself rejects."""

    exit_code = 2


class TopologyError(LabError):
    """A topology value out of range or not one of the allowed names."""

    exit_code = 3


class ConfigFileError(LabError):
    """lab.toml cannot be read or parsed."""

    exit_code = 4


class NetworkClash(LabError):
    """The lab's subnet overlaps a route the machine already has."""

    exit_code = 5


class NeedsRoot(LabError):
    """The provider must run as root."""

    exit_code = 6


class NotUp(LabError):
    """The command needs a lab and there is none (or it is not running)."""

    exit_code = 7


class LabBusy(LabError):
    """Another lab command is working on this lab, or the lab name is taken."""

    exit_code = 8


class MissingDependency(LabError):
    """A machine package or program is missing and could not be installed."""

    exit_code = 9


class ProviderError(LabError):
    """Making, starting or removing hosts failed."""

    exit_code = 10


class ProvisionFailed(LabError):
    """One or more recipes failed on one or more hosts."""

    exit_code = 11


class ChecksFailed(LabError):
    """`lab test` ran and at least one check failed."""

    exit_code = 12


class BenchError(LabError):
    """A load test could not run or produced no measurements."""

    exit_code = 13


class ThresholdMissed(LabError):
    """`lab bench --fail-under-rps/--max-p95-ms`: a measured configuration missed the bar."""

    exit_code = 14


class VagrantMissing(MissingDependency):
    """The vagrant provider was asked for and the `vagrant` program is not there (nor could be installed)."""

    exit_code = 15


class VagrantProviderMissing(MissingDependency):
    """Vagrant is there but the provider behind it (vagrant-libvirt, VirtualBox) is not."""

    exit_code = 16


class BoxMissing(ProviderError):
    """The Vagrant box the lab's VMs are made from is neither added to Vagrant nor downloadable."""

    exit_code = 17


class LibvirtDown(ProviderError):
    """libvirtd does not answer (and could not be started)."""

    exit_code = 18


class BootTimeout(ProviderError):
    """A VM did not boot (answer SSH) within its boot timeout."""

    exit_code = 19


class HostKeyChanged(LabError):
    """A host answered SSH with another key than the one lab pinned for it (`lab forget-key HOST` re-pins on purpose)."""

    exit_code = 55


class NotALabDir(LabError):
    """The lab directory (.lab/ or LAB_DIR) is a folder lab did not make: lab neither writes into it nor removes it."""

    exit_code = 56


class NoSnapshot(LabError):
    """`lab reset --to-step K`: the lab has no snapshot of the end of step K (it never got there, or its hosts changed)."""

    exit_code = 71


class DeployFailed(LabError):
    """`lab deploy`/`lab rollback` stopped: a host failed its health check (the release before still serves)."""

    exit_code = 72


class NothingToRollBack(LabError):
    """`lab rollback`: the web hosts have no release before the one they serve (nothing was tried, nothing changed)."""

    exit_code = 78


class SnapshotsUnsupported(LabError):
    """The lab's provider cannot snapshot its hosts (so `lab reset` cannot rewind it)."""

    exit_code = 73


class NeedsStep(LabError):
    """A demo or command needs the lab to have got to a later workshop step than it has."""

    exit_code = 74


class OfflineMissing(LabError):
    """`lab up --offline` (or `lab cache export`) lacks a part of what a lab up needs from the network."""

    exit_code = 75


class CacheArchiveError(LabError):
    """`lab cache import`: the file is not a lab cache archive, or cannot be read."""

    exit_code = 76


class NotEnoughMemory(LabError):
    """`lab up` would make hosts whose memory the machine does not have available: refused before anything is made."""

    exit_code = 77


class Interrupted(LabError):
    """The user pressed Ctrl-C; what was done is recorded and the next run converges."""

    exit_code = 130


def exit_code_for(error: BaseException) -> int:
    """The process exit code for an error that reached the command line."""
    if isinstance(error, LabError):
        return error.exit_code
    if isinstance(error, KeyboardInterrupt):
        return Interrupted.exit_code
    return 70  # EX_SOFTWARE: a bug in lab, not the user's input


def one_line(error: BaseException) -> str:
    """The error's message folded to a single line."""
    text = " ".join(str(error).split())
    return text or error.__class__.__name__
