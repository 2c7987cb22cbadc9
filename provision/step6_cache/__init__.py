"""Step 6: a memcached cluster (cache1..N, 0 allowed), shared by every web host's Django cache; registers the tier."""

from lab.stack import Link, TierSpec, register_tier

STEP = 6
TITLE = "Tune: a memcached cluster"
MAX_CACHE_HOSTS = 4
MEMCACHED_PORT = 11211

register_tier(
    TierSpec("cache", 40, default_count=0, min_count=0, max_count=MAX_CACHE_HOSTS, memory_mb=256, cpus=1,
             services=("memcached",)),
    links=(Link("web", "cache", MEMCACHED_PORT, "cache"),),  # Django's cache client on each web host (and api host: provision/step6_api), nothing else
    presets={"tuned": 2, "full": 2},
)
