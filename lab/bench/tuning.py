"""The bench's tuning ladder: the workshop's step-6 changes, each one change on top of the previous (`--tune`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

from lab.errors import TopologyError, UsageError
from lab.topology import Overrides

# Ladder order matters: `--tune a,b,c` applies a, then b on top of a, then c on top of both (the seed's "one change
# at a time"). Each step is a function from the previous step's overrides to this step's. Steps are registered by
# the tiers that make them possible (pooler, cache, standby).
TUNING_STEPS: dict[str, Callable[[Overrides], Overrides]] = {
    # The seed's step 5 and 6 toolkit, one change each (docs/tuning/). baseline: no pooler, no cache host, no standby.
    "baseline": lambda overrides: replace(overrides, pooler="none", counts={**overrides.counts, "cache": 0, "db": 1},
                                          replica_reads=None),
    "pgbouncer": lambda overrides: replace(overrides, pooler="pgbouncer"),  # step 5: connection middleware
    "memcached": lambda overrides: replace(overrides, counts={**overrides.counts, "cache": 2}),  # step 6: shared cache
    "replica": lambda overrides: replace(overrides, counts={**overrides.counts, "db": 2}, replica_reads=True),  # standby
}


def ladder(names: Sequence[str], base: Overrides) -> list[tuple[str, Overrides]]:
    """Each named step with its cumulative overrides, in the order given; unknown or out-of-ladder-order names refused."""
    known = list(TUNING_STEPS)
    unknown = [name for name in names if name not in TUNING_STEPS]
    if unknown:
        # An unknown name, like an unknown --server or --preset: the topology code, not the usage code.
        raise TopologyError(f"unknown tuning step {unknown[0]!r}; the ladder is {', '.join(known)}")
    positions = [known.index(name) for name in names]
    if positions != sorted(positions) or len(set(positions)) != len(positions):
        raise UsageError(f"tuning steps go up the ladder once each, in its order: {', '.join(known)}")
    steps, overrides, done = [], base, 0
    for name in names:
        # Cumulative: every step of the ladder up to this one applies, named or not.
        for skipped in known[done:known.index(name) + 1]:
            overrides = TUNING_STEPS[skipped](overrides)
        done = known.index(name) + 1
        steps.append((name, overrides))
    return steps
