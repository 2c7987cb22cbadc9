"""Step 6: load generator hosts (loadgen1..N, 0 by default) running Locust workers for a master on the machine."""

from lab.stack import TierSpec, register_tier

STEP = 6
TITLE = "Tune: measure with load generators of their own"
MAX_LOADGEN_HOSTS = 4

# No link of its own: a worker only opens connections (to the balancer's http/https, which every lab host may
# reach, and to the Locust master on the machine's bridge address); nothing connects to a loadgen host but lab's SSH.
register_tier(
    TierSpec("loadgen", 50, default_count=0, min_count=0, max_count=MAX_LOADGEN_HOSTS, memory_mb=512, cpus=1),
    presets={"full": 1},  # "full" has every tier the lab knows
)
