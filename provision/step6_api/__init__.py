"""Step 6: api hosts (api1..N, 0 allowed) serving the site's JSON API behind the balancer's /api/; registers the tier."""

from lab.stack import APP_SERVER_UNIT, Link, TierSpec, register_tier
# Imported for their ports, and so their tiers are registered before this one links to them (provision/'s step
# packages are otherwise imported in name order, and step6_api comes first).
from provision.step6_cache import MEMCACHED_PORT

STEP = 6
TITLE = "Tune: api hosts for the site's JSON API"
MAX_API_HOSTS = 4
API_PURPOSE = "api"  # the balancer's /api/ upstream: the app server on each api host
APP_PORT = 8000  # step 1's APP_PORT (provision.step1_bootstrap.recipes; a unit test keeps the two equal)
SQL_PORT = 5432

register_tier(
    # The web tier's size: the same site (the whole of Django) under the same app server.
    TierSpec("api", 70, default_count=0, min_count=0, max_count=MAX_API_HOSTS, memory_mb=768, cpus=1,
             services=(APP_SERVER_UNIT,)),
    links=(
        Link("lb", "api", APP_PORT, API_PURPOSE),
        # The site's database, as from a web host (through its own pgbouncer when the lab pools).
        Link("api", "db", SQL_PORT, "sql"),
        # The shared cache: a transfer through the API drops the cached balances the web pages show.
        Link("api", "cache", MEMCACHED_PORT, "cache"),
    ),
    presets={"full": 1},
)
