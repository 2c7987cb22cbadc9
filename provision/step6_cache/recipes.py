"""Step 6 recipes: memcached on each cache host's private address, and every web and api host's Django cache over all of them."""

from __future__ import annotations

from lab.recipes import Target, recipe
from provision.step1_bootstrap.recipes import APP_SERVER_TIERS
from provision.step5_pooler.recipes import site_overlay
from provision.step6_cache import MEMCACHED_PORT

MEMCACHED_MEMORY_MB = 64  # of the host's 256 MB: the site caches a few small pages


@recipe(tiers=("cache",))
def memcached(t: Target) -> None:
    t.packages("memcached")
    with t.owed("memcached-restart") as earlier_change:
        changed = t.template("/etc/memcached.conf", "step6_cache/templates/memcached.conf.j2",
                             port=MEMCACHED_PORT, memory_mb=MEMCACHED_MEMORY_MB)
        t.service("memcached", restart=changed or earlier_change)
    t.wait_for_port(t.host.ip, MEMCACHED_PORT)


@recipe(tiers=APP_SERVER_TIERS, after=("step6_cache.memcached",))
def site_cache(t: Target) -> None:
    """Django's PyMemcacheCache over every cache host this web or api host may reach; with none, its local-memory cache."""
    caches = t.topology.serving("cache", client=t.host)
    if caches:
        port = t.topology.port("cache", client=t.host)
        site_overlay(t, "cache", {"cache": "memcached", "cache_location": [f"{h.ip}:{port}" for h in caches]})
    else:
        site_overlay(t, "cache", {})
