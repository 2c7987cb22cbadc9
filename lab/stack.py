"""The stack as a graph: which tiers a lab may have, and the links saying who may open which port on whom.

Plain data, in one registry. Everything that repeats "who talks to whom" (each host's firewall, pg_hba, the
balancer's upstream, the site's settings, the firewall check) is derived from the links here, through
lab.topology.Topology; adding a tier is one `register_tier` call with its links.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping

# Link ends that are not tiers.
MACHINE = "machine"  # this machine: where lab's SSH, the checks and the load tests come from
SUBNET = "lab"  # anything on the lab's network (every host and the machine's bridge address)
EVERY_TIER = "*"  # as a link's target: every host of the lab
# In a tier's services: the lab's app server unit, which depends on the lab (gunicorn, or apache2 for mod_wsgi).
APP_SERVER_UNIT = "<app server>"


@dataclass(frozen=True)
class TierSpec:
    """What every host of a tier shares, and how many of them a lab may have (min_count 0: the tier is optional)."""

    name: str
    ip_offset: int  # host N of the tier gets subnet address ip_offset + N
    default_count: int
    min_count: int
    max_count: int
    memory_mb: int
    cpus: int
    services: tuple[str, ...] = ()  # the tier's main systemd units, what `lab status` shows (APP_SERVER_UNIT: the lab's)
    first_host_services: tuple[str, ...] = ()  # units only the tier's first host runs (q1's Redis), shown after those


# The IP protocols a link may open, by their number (nftables matches them by number: minbase has no
# /etc/protocols). Only TCP has ports; VRRP (keepalived's adverts between the balancers) has none.
IP_PROTOCOLS = {"tcp": 6, "vrrp": 112}


@dataclass(frozen=True)
class Link:
    """Hosts of `source` may open TCP `port` on hosts of `target`, for a named purpose (e.g. lb → web :8000 app);
    or, with another protocol than TCP, send it that protocol's packets (port 0: e.g. lb → lb vrrp)."""

    source: str  # a tier name, MACHINE or SUBNET
    target: str  # a tier name or EVERY_TIER
    port: int
    purpose: str
    protocol: str = "tcp"  # one of IP_PROTOCOLS

    def __post_init__(self) -> None:
        if self.protocol not in IP_PROTOCOLS:
            raise ValueError(f"link {self.purpose!r}: protocol {self.protocol!r} is not one of {', '.join(IP_PROTOCOLS)}")
        if (self.protocol == "tcp") != (1 <= self.port <= 65535) or (self.protocol != "tcp" and self.port != 0):
            raise ValueError(f"link {self.purpose!r}: a tcp link has a port from 1 to 65535, any other protocol port 0")

    def __str__(self) -> str:
        if self.protocol != "tcp":
            return f"{self.source} → {self.target} {self.protocol} {self.purpose}"
        return f"{self.source} → {self.target} :{self.port} {self.purpose}"


@dataclass(frozen=True)
class Stack:
    """The tiers (in boot and display order), the links between them, and the presets naming tier counts."""

    tiers: Mapping[str, TierSpec]
    links: tuple[Link, ...]
    presets: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    def with_tier(self, spec: TierSpec, links: Iterable[Link] = (), presets: Mapping[str, int] = {}) -> "Stack":
        """This stack with one more tier, its links, and its count in some presets (e.g. {"full": 1})."""
        if spec.name in self.tiers or spec.name in (MACHINE, SUBNET, EVERY_TIER):
            raise ValueError(f"tier {spec.name!r} is already registered")
        if not 0 <= spec.min_count <= spec.default_count <= spec.max_count:
            raise ValueError(f"tier {spec.name!r}: counts must satisfy min <= default <= max")
        links = tuple(links)
        tiers = {**self.tiers, spec.name: spec}
        for link in links:
            ends = {link.source, link.target} - {MACHINE, SUBNET, EVERY_TIER}
            if ends - set(tiers) or link.source == EVERY_TIER or link.target in (MACHINE, SUBNET):
                raise ValueError(f"link {link} names an unknown tier or a wrong end")
        preset_counts = {name: dict(counts) for name, counts in self.presets.items()}
        for preset, count in presets.items():
            if preset not in preset_counts or not spec.min_count <= count <= spec.max_count:
                raise ValueError(f"tier {spec.name!r}: preset {preset!r} unknown or its count out of range")
            preset_counts[preset][spec.name] = count
        return replace(self, tiers=tiers, links=self.links + links, presets=preset_counts)

    def with_links(self, *links: Link) -> "Stack":
        for link in links:
            ends = {link.source, link.target} - {MACHINE, SUBNET, EVERY_TIER}
            if ends - set(self.tiers):
                raise ValueError(f"link {link} names an unknown tier")
        return replace(self, links=self.links + links)

    def preset_counts(self, preset: str) -> Mapping[str, int]:
        """Tier counts of a preset; a tier the preset does not name has its default count."""
        return {name: self.presets[preset].get(name, spec.default_count) for name, spec in self.tiers.items()}


# The seed's stack as far as the lab builds it today. A tier added later (cache, queue, pooler, ...) registers
# itself here with `register_tier(TierSpec(...), links=(...), presets={"full": 1})`.
_BASE = Stack(
    tiers={},
    links=(),
    # minimal: lb1/web1/db1, the default. workshop: the workshop's steps 1-5 as the seed teaches them (two web
    # hosts behind one balancer; pgbouncer on each, see lab.topology.PRESET_POOLER). tuned: workshop plus step 6
    # (the cache hosts, registered by provision/step6_cache, and the hot standby db2). full: every tier the lab
    # knows, optional ones included; each tier that registers itself adds its count to "full" (and "tuned").
    # full's lb2: the balancer pair holding one floating address (provision/step5_lbpair).
    presets={"minimal": {}, "workshop": {"web": 2}, "tuned": {"web": 2, "db": 2}, "full": {"web": 2, "db": 2, "lb": 2}},
)
BUILT_IN = (
    _BASE.with_tier(TierSpec("lb", 10, 1, 1, 2, 512, 1, ("nginx",)))  # the load balancer
    .with_tier(TierSpec("web", 20, 1, 1, 9, 768, 1, (APP_SERVER_UNIT,)))  # Django under the app server
    # PostgreSQL; its cluster's own unit: postgresql.service is a wrapper that stays "active" when the cluster is down.
    # db1 is the primary at first; db2 (at most one more) a hot standby by streaming replication (step 6).
    .with_tier(TierSpec("db", 30, 1, 1, 2, 768, 1, ("postgresql@15-main",)))
    .with_links(
        Link(MACHINE, EVERY_TIER, 22, "ssh"),  # lab's own SSH (recipes, checks, `lab ssh`)
        Link(SUBNET, "lb", 80, "http"),  # the site, for the machine (browser, load tests) and every lab host
        Link(SUBNET, "lb", 443, "https"),  # the site over TLS (port 80 redirects to it)
        # `lab bench --scheme http` only: the same site without TLS, so the bench can measure what TLS costs.
        # The machine alone may reach it (the firewall follows this link); a browser never gets here.
        Link(MACHINE, "lb", 8080, "http-plain"),
        Link("lb", "web", 8000, "app"),  # the balancer's upstream: the app server on each web host
        Link("web", "db", 5432, "sql"),  # the site's database connections (primary, and the standby's reads)
        Link("db", "db", 5432, "replication"),  # the standby streaming from the primary (pg_hba's replication line)
    )
)
DEFAULT_PRESET = "minimal"
_registered = [BUILT_IN]


_step_tiers_loaded = False


def current() -> Stack:
    """The lab's stack: the built-in tiers and links, and every tier kind registered since (the step packages of
    provision/ register theirs in their __init__.py: they are imported here, once, before the first answer)."""
    global _step_tiers_loaded
    if not _step_tiers_loaded:
        _step_tiers_loaded = True  # first: a step package's register_tier() calls current() again
        _load_step_tiers()
    return _registered[-1]


def _load_step_tiers() -> None:
    """Import every provision/stepN_*/ package (by name, not an import statement: provision/ depends on lab/, not
    the other way round), so the tiers they register are known wherever the stack is read."""
    import importlib
    from pathlib import Path

    provision = Path(__file__).resolve().parents[1] / "provision"
    for folder in sorted(provision.glob("step[0-9]*_*")):
        if (folder / "__init__.py").exists():
            importlib.import_module(f"provision.{folder.name}")


def register_tier(spec: TierSpec, links: Iterable[Link] = (), presets: Mapping[str, int] = {}) -> None:
    """Add a tier kind and its links to the lab's stack (at import time, before recipes and checks are loaded)."""
    _registered.append(current().with_tier(spec, links, presets))


def register_links(*links: Link) -> None:
    """Add links between tiers already known (e.g. a step's own traffic between the hosts of one built-in tier)."""
    _registered.append(current().with_links(*links))


def all_tiers() -> tuple[str, ...]:
    """Every tier's name, for recipes and checks that run on every host (`@recipe(tiers=all_tiers())`)."""
    return tuple(current().tiers)
