"""Step 6: a search server (search1..N, 0 allowed) behind the site's search page through Django Haystack; registers the tier."""

from lab.stack import Link, TierSpec, register_tier

STEP = 6
TITLE = "Tune: a search server behind Haystack"
MAX_SEARCH_HOSTS = 2  # the seed's search1 and search2
SEARCH_PORT = 33333  # xapian-tcpsrv has no default port; 33333 is the one Xapian's own remote-backend docs use

register_tier(
    TierSpec("search", 80, default_count=0, min_count=0, max_count=MAX_SEARCH_HOSTS, memory_mb=256, cpus=1,
             services=("xapian-tcpsrv",)),
    # The site's Haystack backend on each web host, and nothing else: the remote protocol has no authentication.
    links=(Link("web", "search", SEARCH_PORT, "search"),),
    presets={"full": 1},
)
