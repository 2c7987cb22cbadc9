"""The lab's topology: one model, resolved once (defaults → preset → tier → host → environment → flags), then frozen."""

from __future__ import annotations

import importlib
import ipaddress
import os
import re
import sys
import tomllib
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from lab import stack as stacks
from lab.errors import ConfigFileError, TopologyError
from lab.stack import EVERY_TIER, MACHINE, SUBNET, Link, Stack, TierSpec

DEFAULT_SUBNET = "192.168.56.0/24"  # VirtualBox's host-only range: the same file works under Vagrant
DEFAULT_NAME = "lab"
PROVIDER_NAMES = ("auto", "local", "vagrant")
APP_SERVERS = ("gunicorn", "mod_wsgi")
# Threads per app server process when lab.toml does not say: Gunicorn's sync worker (one request per process,
# as the workshop runs it), and mod_wsgi-express's own default of 5. Django keeps one database connection per
# thread (CONN_MAX_AGE), so 9 web hosts x 2 processes x 5 threads stays under PostgreSQL's 100 connections;
# WSGIDaemonProcess's bare default of 15 threads would not.
DEFAULT_THREADS = {"gunicorn": 1, "mod_wsgi": 5}
RFC1918 = tuple(ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
# Every string lab renders into a file another program reads as code or configuration (the Vagrantfile is Ruby,
# where "#{...}" in a string runs; nginx, pg_hba, systemd units, /etc/hosts) matches a strict pattern first:
# nothing in it can close a quote, interpolate, comment out or start a new line.
HOST_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
BOX_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}(/[A-Za-z0-9][A-Za-z0-9._-]{0,63})?$")


# The tiers (lab.stack's registry) as known when this module was imported: for help texts. The model itself
# always asks the topology's own stack.
TIERS: Mapping[str, TierSpec] = stacks.current().tiers

# Each provider's own lab.toml table and its schema, as import paths: the provider's package imports this module,
# so its schema is imported only when a table is resolved (as providers are, in lab.providers.PROVIDERS).
# A schema module has KEYS, resolve(table, environ), from_dict(data) and check(settings) (strings bound for templates).
PROVIDER_SETTINGS: dict[str, str] = {"vagrant": "lab.providers.vagrant.settings"}
TOP_KEYS = {"lab", "tiers", "hosts", "appserver", "bench", "db"} | set(PROVIDER_SETTINGS)
BENCH_KEYS = {"generator_cpus"}  # [bench]: the bench's machine-side settings (lab.machine.cpus reads generator_cpus)
CPULIST = re.compile(r"\d+(-\d+)?(,\d+(-\d+)?)*")
LAB_KEYS = {"name", "subnet", "provider", "app_server", "preset"}
TIER_KEYS = {"count", "memory", "cpus"}
HOST_KEYS = {"ip", "memory", "cpus"}
APPSERVER_KEYS = {"workers", "threads"}
APPSERVER_WORKERS = (1, 16)  # processes per web host: each holds the whole site in memory
APPSERVER_THREADS = (1, 32)

# [db]: the database side of the site (step 2's PostgreSQL, step 5's pooler, step 6's standby).
DB_KEYS = {"pooler", "replica_reads", "max_connections", "pool_size"}
POOLERS = ("none", "pgbouncer")
# The workshop's step 5 puts connection middleware between the web and database layers: the presets that teach
# step 5 have it; minimal (steps 1-4) does not.
PRESET_POOLER = {"minimal": "none", "workshop": "pgbouncer", "tuned": "pgbouncer", "full": "pgbouncer"}
DEFAULT_MAX_CONNECTIONS = 100  # PostgreSQL's own default; written by step 2's postgresql-lab.conf.j2
DB_MAX_CONNECTIONS = (20, 1000)
DEFAULT_POOL_SIZE = 10  # pgbouncer's server connections per web host and database (its default_pool_size is 20)
DB_POOL_SIZE = (1, 100)
# Connections the budget keeps free of the site: superuser_reserved_connections (3), lab's own psql (recipes,
# checks, migrations, `lab failover`) and a margin.
RESERVED_CONNECTIONS = 10


@dataclass(frozen=True)
class Host:
    """One machine of the lab."""

    name: str
    tier: str
    ip: str
    memory_mb: int
    cpus: int


@dataclass(frozen=True)
class Opening:
    """One port of a host and who may open it, from one link; `sources` empty means from anywhere. A link of another
    protocol than TCP opens that protocol (port 0) to its sources."""

    port: int
    purpose: str
    sources: tuple[str, ...]  # addresses or networks
    protocol: str = "tcp"  # one of lab.stack.IP_PROTOCOLS

    @property
    def ip_protocol(self) -> int:
        """The protocol's number, as nftables matches it (`meta l4proto 112`)."""
        return stacks.IP_PROTOCOLS[self.protocol]


def provider_schema(table: str) -> Any:
    """The settings schema module of the provider that owns a lab.toml table (e.g. [vagrant])."""
    return importlib.import_module(PROVIDER_SETTINGS[table])


@dataclass(frozen=True)
class AppServerSettings:
    """How hard each web host's app server works (lab.toml [appserver]); the defaults are Gunicorn's."""

    workers: int = 2  # Gunicorn worker processes, or mod_wsgi daemon processes
    threads: int = DEFAULT_THREADS["gunicorn"]  # per process; Gunicorn uses its gthread worker when above 1


@dataclass(frozen=True)
class DbSettings:
    """The database side (lab.toml [db]): the pooler on each web host, reads sent to the standby, the budget."""

    pooler: str = "none"  # "pgbouncer": on 127.0.0.1:6432 of each web host, transaction pooling
    replica_reads: bool = False  # the read-only report from the standby (a Django database router)
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    pool_size: int = DEFAULT_POOL_SIZE
    primary: str = "db1"  # which db host takes writes; `lab failover db` changes it


def app_server_hosts(hosts: Iterable[Host], stack: Stack) -> list[Host]:
    """The hosts running the lab's app server, each with its own connections to the database: every host of a tier
    whose services name it (the web hosts, and step 6's api hosts)."""
    return [h for h in hosts if stacks.APP_SERVER_UNIT in stack.tiers[h.tier].services]


def _app_server_tiers_said(hosts: Iterable[Host]) -> str:
    """"web hosts", or "web and api hosts": the budget's words for the hosts it counts."""
    return f"{' and '.join(dict.fromkeys(h.tier for h in hosts)) or 'web'} hosts"


def connection_budget(web_hosts: int, appserver: AppServerSettings, db: DbSettings, counted: str = "web hosts"
                      ) -> tuple[int, str]:
    """The most connections the site can open on one database server, and the sum that says why (`counted`: what
    the first number counts)."""
    if db.pooler == "pgbouncer":
        return (web_hosts * db.pool_size + RESERVED_CONNECTIONS,
                f"{web_hosts} {counted} × pgbouncer pool_size {db.pool_size} + {RESERVED_CONNECTIONS} reserved")
    return (web_hosts * appserver.workers * appserver.threads + RESERVED_CONNECTIONS,
            f"{web_hosts} {counted} × {appserver.workers} processes × {appserver.threads} threads + "
            f"{RESERVED_CONNECTIONS} reserved")


def check_connection_budget(hosts: Iterable[Host], stack: Stack, appserver: AppServerSettings, db: DbSettings) -> None:
    """Refuse a lab whose app servers (web and api hosts) could open more database connections than PostgreSQL's
    max_connections."""
    serving = app_server_hosts(hosts, stack)
    needed, why = connection_budget(len(serving), appserver, db, _app_server_tiers_said(serving))
    if needed > db.max_connections:
        # Behind pgbouncer the app servers' processes and threads are its clients, not PostgreSQL's: its pool counts.
        lower = ("[db] pool_size or the web count" if db.pooler == "pgbouncer"
                 else '[appserver] workers/threads or the web count, or set [db] pooler = "pgbouncer"')
        raise TopologyError(f"connection budget: {why} = {needed} > db max_connections {db.max_connections}; "
                            f"lower {lower}, or raise [db] max_connections")


@dataclass(frozen=True)
class Topology:
    """A resolved lab: every value decided, nothing left to look up."""

    name: str
    subnet: str
    provider: str
    app_server: str
    hosts: tuple[Host, ...]
    appserver: AppServerSettings = AppServerSettings()
    provider_settings: Mapping[str, Any] = field(default_factory=dict)  # table name → that provider's settings
    stack: Stack = field(default_factory=stacks.current)  # the tiers and links this lab was resolved with
    db: DbSettings = DbSettings()

    @property
    def db_primary(self) -> Host:
        """The db host that takes writes."""
        return self.host(self.db.primary)

    def describe_data_tiers(self, not_serving: Iterable[str] = ()) -> str:
        """One line on what sits behind the site: its pooler, its cache (the local-memory one when no cache host),
        the primary and the standby, its queue (none: tasks run in the request); a standby named in `not_serving`
        (stopped, e.g. fenced by `lab failover db`) is said to be one only once `lab up` has made it one again."""
        # The pooled tiers are step 5's POOLED_TIERS (web, api); the library does not import a recipe to name them.
        pooled = "web and api host" if "api" in self.stack.tiers and self.tier("api") else "web host"
        pooler = f"pgbouncer on each {pooled} (127.0.0.1:6432)" if self.db.pooler == "pgbouncer" else "no pooler"
        caches = self.tier("cache") if "cache" in self.stack.tiers else ()
        cache = (f"memcached on {', '.join(h.name for h in caches)}" if caches
                 else "no cache host: each app server process keeps its own local-memory cache")
        down = set(not_serving)
        serving = ", ".join(h.name for h in self.db_standbys if h.name not in down)
        parts = [f"primary {self.db.primary}"]
        if serving:
            reads = "; the report reads from it" if self.db.replica_reads else ""
            parts.append(f"hot standby {serving} (async{reads})")
        parts += [f"{h.name} down (`lab up` makes it a standby)" for h in self.db_standbys if h.name in down]
        db = ", ".join(parts if len(parts) > 1 else parts + ["no standby"])
        queues = self.tier("q") if "q" in self.stack.tiers else ()
        queue = (f"Redis on {queues[0].name}, Celery workers on {', '.join(h.name for h in queues)}" if queues
                 else "no q host: the site's tasks run in the request (Celery always-eager)")
        return f"database: {db}; {pooler}; cache: {cache}; queue: {queue}"

    @property
    def db_standbys(self) -> tuple[Host, ...]:
        """The db hosts streaming from the primary (hot standbys: readable, never written)."""
        return tuple(h for h in self.tier("db") if h.name != self.db.primary)

    @property
    def gateway(self) -> str:
        """The machine's own address on the lab network (the bridge)."""
        return str(next(ipaddress.ip_network(self.subnet).hosts()))

    def tier(self, tier: str) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if h.tier == tier)

    # -- the site's address ---------------------------------------------------------------------
    @property
    def balancer_pair(self) -> tuple[Host, ...]:
        """The balancers sharing the floating address (provision/step5_lbpair's keepalived): the hosts serving the
        site when there are two of them; none with a single balancer."""
        balancers = self.serving("https")
        return balancers if len(balancers) == 2 else ()

    @property
    def floating_ip(self) -> str | None:
        """The address the balancer pair holds between them (one at a time), the site's with two balancers: their
        tier's address zero (host N of a tier gets offset + N, so no host of the tier gets it); None with one."""
        if not self.balancer_pair:
            return None
        offset = self.stack.tiers[self.balancer_pair[0].tier].ip_offset
        return str(ipaddress.ip_network(self.subnet).network_address + offset)

    @property
    def site_address(self) -> str:
        """Where a browser reaches the site: the floating address of the balancer pair, or the one balancer's."""
        return self.floating_ip or self.serving("https")[0].ip

    def addresses(self, host: Host) -> tuple[str, ...]:
        """The addresses a host's services may listen on: its own, and the floating one for each of the pair (a
        balancer listens on it even while its peer holds it, so taking it over needs no restart)."""
        if host in self.balancer_pair:
            return (host.ip, str(self.floating_ip))
        return (host.ip,)

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise TopologyError(f"no host {name!r} in this lab; hosts: {', '.join(h.name for h in self.hosts)}")

    def count(self, tier: str) -> int:
        return len(self.tier(tier))

    def settings(self, table: str) -> Any:
        """A provider's settings (its lab.toml table), or its defaults when the lab was made without them."""
        if table in self.provider_settings:
            return self.provider_settings[table]
        return provider_schema(table).from_dict({})

    # -- the links ------------------------------------------------------------------------------
    def inbound(self, host: Host, machine: str | None) -> tuple[Opening, ...]:
        """Who may reach this host on which port, one opening per link into its tier (machine: this machine's
        address as lab's SSH reaches the hosts, the lab bridge's address added; None lets MACHINE links in from
        anywhere). A link whose source tier has
        no hosts opens nothing."""
        openings = []
        for link in self.stack.links:
            if link.target not in (host.tier, EVERY_TIER):
                continue
            if link.source == SUBNET:
                sources: tuple[str, ...] = (self.subnet,)
            elif link.source == MACHINE:
                # The machine as lab's SSH arrives from it (a VM's management network under Vagrant) and as it
                # sends on the lab network itself (the bridge's address): the bench's plain port, a Locust master.
                sources = tuple(dict.fromkeys((machine, self.gateway))) if machine else ()
            else:  # a host needs no rule to reach itself (db → db replication on a lab with one db host)
                sources = tuple(h.ip for h in self.tier(link.source) if h.name != host.name)
                if not sources:
                    continue
            openings.append(Opening(link.port, link.purpose, sources, link.protocol))
        return tuple(openings)

    def clients(self, host: Host, purpose: str) -> tuple[Host, ...]:
        """The lab hosts that links let open `purpose` on this host (e.g. the web hosts of db1's "sql")."""
        tiers = {link.source for link in self.stack.links
                 if link.purpose == purpose and link.target in (host.tier, EVERY_TIER)}
        if SUBNET in tiers:
            return self.hosts
        return tuple(h for h in self.hosts if h.tier in tiers)

    def _links(self, purpose: str, client: Host | None) -> list[Link]:
        return [link for link in self.stack.links
                if link.purpose == purpose and (client is None or link.source in (client.tier, SUBNET))]

    def serving(self, purpose: str, client: Host | None = None) -> tuple[Host, ...]:
        """The hosts that serve a link (e.g. "app": the balancer's upstream); with a client, only links it may use."""
        targets = {link.target for link in self._links(purpose, client)}
        return tuple(h for h in self.hosts if h.tier in targets or EVERY_TIER in targets)

    def port(self, purpose: str, client: Host | None = None) -> int:
        """The port of a link (e.g. "sql": 5432), as the client (when given) opens it."""
        ports = {link.port for link in self._links(purpose, client)}
        if len(ports) != 1:
            raise TopologyError(f"link {purpose!r} has {'no port' if not ports else 'several ports'} here")
        return ports.pop()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "subnet": self.subnet,
            "provider": self.provider,
            "app_server": self.app_server,
            "hosts": [h.__dict__.copy() for h in self.hosts],
            **{table: self.settings(table).__dict__.copy() for table in PROVIDER_SETTINGS},
            "appserver": self.appserver.__dict__.copy(),
            "db": self.db.__dict__.copy(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Topology":
        return checked_for_templates(cls(
            name=data["name"],
            subnet=data["subnet"],
            provider=data["provider"],
            # State files written before a field existed describe labs that ran its default (Gunicorn, 2 x 1).
            app_server=data.get("app_server", "gunicorn"),
            hosts=tuple(Host(**h) for h in data["hosts"]),
            appserver=AppServerSettings(**data.get("appserver", {})),
            db=DbSettings(**data.get("db", {})),  # labs made before [db]: no pooler, db1 the primary
            provider_settings={table: provider_schema(table).from_dict(data.get(table, {})) for table in PROVIDER_SETTINGS},
        ))


@dataclass(frozen=True)
class Overrides:
    """Values chosen on the command line, or remembered from an earlier `lab up`; None (or empty) means "not chosen".

    Every field is a scalar or a mapping of scalars; choices() flattens them ("web", "counts.lb") so the state file
    can keep what the user chose without knowing each field, and flags added later are remembered with no more code.
    """

    web: int | None = None
    provider: str | None = None
    counts: Mapping[str, int] = field(default_factory=dict)
    app_server: str | None = None
    preset: str | None = None
    pooler: str | None = None  # --pooler, [db] pooler
    replica_reads: bool | None = None  # [db] replica_reads
    db_primary: str | None = None  # set by `lab failover db` (no flag): the db host that now takes writes

    def choices(self) -> dict[str, Any]:
        """Each chosen value on its own, as plain data: {"web": 2, "app_server": "mod_wsgi", "counts.lb": 2}."""
        chosen: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, Mapping):
                chosen.update({f"{item.name}.{key}": inner for key, inner in value.items()})
            elif value is not None:
                chosen[item.name] = value
        return chosen

    @classmethod
    def from_choices(cls, choices: Mapping[str, Any]) -> "Overrides":
        """The inverse of choices(); keys this version of lab does not know (a flag since removed) are dropped."""
        mappings = {item.name for item in fields(cls) if item.default_factory is not MISSING}
        scalars = {item.name for item in fields(cls)} - mappings
        values: dict[str, Any] = {name: {} for name in mappings}
        for key, value in choices.items():
            name, _, inner = key.partition(".")
            if name in mappings and inner:
                values[name][inner] = value
            elif name in scalars and not inner:
                values[name] = value
        return cls(**values)

    @classmethod
    def describing(cls, topology: "Topology") -> "Overrides":
        """The choices that ask for exactly this topology's own values (what an existing lab was made with)."""
        return cls(web=topology.count("web"), provider=topology.provider, app_server=topology.app_server,
                   counts={tier: topology.count(tier) for tier in TIERS if tier != "web"},
                   pooler=topology.db.pooler, replica_reads=topology.db.replica_reads,
                   db_primary=topology.db.primary)


def choice_flag(key: str, value: Any) -> str:
    """The command-line flag that makes a choice: "web" → --web=2, "counts.lb" → --lb=2, "app_server" → --app-server=…"""
    name = key.partition(".")[2] if "." in key else key
    return f"--{name.replace('_', '-')}={value}"


def load_file(path: Path) -> dict[str, Any]:
    """Read lab.toml; a missing file is an empty one (built-in defaults apply)."""
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigFileError(f"{path.name}: not valid TOML: {error}") from None
    except OSError as error:
        raise ConfigFileError(f"{path.name}: cannot read: {error.strerror}") from None


def _unknown_keys(where: str, given: Mapping[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(given) - allowed)
    if extra:
        raise TopologyError(f"{where}: unknown key {extra[0]!r}; allowed: {', '.join(sorted(allowed))}")


def _table(where: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TopologyError(f"{where} must be a table")
    return value


def _integer(where: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = int(str(value), 10)
        except ValueError:
            raise TopologyError(f"{where} must be an integer from {low} to {high} (got {value!r})") from None
    if not low <= value <= high:
        raise TopologyError(f"{where} must be from {low} to {high} (got {value})")
    return value


def _choice(where: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise TopologyError(f"{where} must be one of {', '.join(allowed)} (got {value!r})")
    return value


def validate_name(where: str, value: Any) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise TopologyError(
            f"{where} must be 1-20 lowercase letters, digits or '-', starting with a letter (got {value!r})"
        )
    return value


def template_safe(where: str, value: Any, pattern: re.Pattern[str], what: str) -> str:
    """A string bound for a template, refused (TopologyError, one line) unless it matches its strict pattern."""
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise TopologyError(f"{where} must be {what} (got {value!r})")
    return value


def checked_for_templates(topology: Topology) -> Topology:
    """The topology, once every string of it that templates print is known to match its pattern (the lab's name,
    host and tier names, addresses): also for a topology read back from a state file, which lab.toml never saw."""
    validate_name("lab name", topology.name)
    validate_subnet("lab subnet", topology.subnet)
    _choice("lab provider", topology.provider, PROVIDER_NAMES)
    _choice("lab app_server", topology.app_server, APP_SERVERS)
    network = ipaddress.IPv4Network(topology.subnet)
    for host in topology.hosts:
        template_safe("a host name", host.name, HOST_NAME_PATTERN, "lowercase letters, digits or '-'")
        template_safe(f"{host.name}'s tier", host.tier, HOST_NAME_PATTERN, "lowercase letters, digits or '-'")
        _host_ip(f"{host.name}'s address", host.ip, network)
    for table in topology.provider_settings:
        provider_schema(table).check(topology.provider_settings[table])
    return topology


def validate_subnet(where: str, value: Any) -> str:
    try:
        network = ipaddress.IPv4Network(str(value), strict=True)
    except ValueError as error:
        raise TopologyError(f"{where} must be an IPv4 network like {DEFAULT_SUBNET} ({error})") from None
    if not any(network.subnet_of(private) for private in RFC1918):
        raise TopologyError(f"{where} must be a private range (RFC 1918) like {DEFAULT_SUBNET} (got {value})")
    if network.prefixlen > 26:
        raise TopologyError(f"{where} must have at least 64 addresses (/26 or larger; got /{network.prefixlen})")
    return str(network)


def bench_generator_cpus(file_data: Mapping[str, Any]) -> str | None:
    """`[bench] generator_cpus` ("1", "2-3", "1,3": the CPUs Locust and wrk run on), checked; None when unset."""
    bench = _table("lab.toml [bench]", file_data.get("bench", {}))
    _unknown_keys("lab.toml [bench]", bench, BENCH_KEYS)
    value = bench.get("generator_cpus")
    if value is None:
        return None
    if not isinstance(value, str) or not CPULIST.fullmatch(value.replace(" ", "")):
        raise TopologyError(f"lab.toml [bench] generator_cpus must be a CPU list like \"1\" or \"2-3\" (got {value!r})")
    return value.replace(" ", "")


def resolve(
    file_data: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    overrides: Overrides = Overrides(),
    platform: str = sys.platform,
    stack: Stack | None = None,
) -> Topology:
    """Turn lab.toml, LAB_* variables and flags into one Topology, or say which key is wrong."""
    environ = os.environ if environ is None else environ
    stack = stack or stacks.current()
    _unknown_keys("lab.toml", file_data, TOP_KEYS)
    bench_generator_cpus(file_data)
    lab = _table("lab.toml [lab]", file_data.get("lab", {}))
    _unknown_keys("lab.toml [lab]", lab, LAB_KEYS)
    tiers = _table("lab.toml [tiers]", file_data.get("tiers", {}))
    hosts_cfg = _table("lab.toml [hosts]", file_data.get("hosts", {}))

    name = validate_name("lab.name", lab.get("name", DEFAULT_NAME))
    if "LAB_NAME" in environ:
        name = validate_name("LAB_NAME", environ["LAB_NAME"])
    subnet_source = "LAB_SUBNET" if "LAB_SUBNET" in environ else "lab.subnet"
    subnet = validate_subnet(subnet_source, environ.get("LAB_SUBNET", lab.get("subnet", DEFAULT_SUBNET)))
    provider = lab.get("provider", "auto")
    provider_where = "lab.provider"
    if "LAB_PROVIDER" in environ:
        provider, provider_where = environ["LAB_PROVIDER"], "LAB_PROVIDER"
    if overrides.provider is not None:
        provider, provider_where = overrides.provider, "--provider"
    provider = _choice(provider_where, provider, PROVIDER_NAMES)
    if provider == "auto":
        provider = "local" if platform.startswith("linux") else "vagrant"
    app_server, app_server_where = lab.get("app_server", "gunicorn"), "lab.app_server"
    if "LAB_APP_SERVER" in environ:
        app_server, app_server_where = environ["LAB_APP_SERVER"], "LAB_APP_SERVER"
    if overrides.app_server is not None:
        app_server, app_server_where = overrides.app_server, "--app-server"
    app_server = _choice(app_server_where, app_server, APP_SERVERS)
    appserver = _appserver_settings(_table("lab.toml [appserver]", file_data.get("appserver", {})), app_server)

    for tier_name, tier_cfg in tiers.items():
        if tier_name not in stack.tiers:
            raise TopologyError(f"lab.toml [tiers.{tier_name}]: unknown tier; tiers: {', '.join(stack.tiers)}")
        _unknown_keys(f"lab.toml [tiers.{tier_name}]", _table(f"[tiers.{tier_name}]", tier_cfg), TIER_KEYS)
    preset, preset_where = lab.get("preset", stacks.DEFAULT_PRESET), "lab.preset"
    if "LAB_PRESET" in environ:
        preset, preset_where = environ["LAB_PRESET"], "LAB_PRESET"
    if overrides.preset is not None:
        preset, preset_where = overrides.preset, "--preset"
    preset = _choice(preset_where, preset, tuple(stack.presets))
    preset_counts = stack.preset_counts(preset)

    network = ipaddress.IPv4Network(subnet)
    hosts: list[Host] = []
    for spec in stack.tiers.values():
        tier_cfg = tiers.get(spec.name, {})
        low, high = spec.min_count, spec.max_count
        count = _integer(f"tiers.{spec.name}.count", tier_cfg.get("count", preset_counts[spec.name]), low, high)
        env_key = f"LAB_{spec.name.upper()}"
        if env_key in environ:
            count = _integer(env_key, environ[env_key], low, high)
        if spec.name in overrides.counts:
            count = _integer(f"--{spec.name}", overrides.counts[spec.name], low, high)
        if spec.name == "web" and overrides.web is not None:
            count = _integer("--web", overrides.web, low, high)
        memory = _integer(f"tiers.{spec.name}.memory", tier_cfg.get("memory", spec.memory_mb), 128, 65536)
        cpus = _integer(f"tiers.{spec.name}.cpus", tier_cfg.get("cpus", spec.cpus), 1, 64)
        for index in range(1, count + 1):
            host_name = f"{spec.name}{index}"
            host_cfg = _table(f"[hosts.{host_name}]", hosts_cfg.get(host_name, {}))
            _unknown_keys(f"lab.toml [hosts.{host_name}]", host_cfg, HOST_KEYS)
            ip = host_cfg.get("ip", str(network.network_address + spec.ip_offset + index))
            hosts.append(
                Host(
                    name=host_name,
                    tier=spec.name,
                    ip=_host_ip(f"hosts.{host_name}.ip", ip, network),
                    memory_mb=_integer(f"hosts.{host_name}.memory", host_cfg.get("memory", memory), 128, 65536),
                    cpus=_integer(f"hosts.{host_name}.cpus", host_cfg.get("cpus", cpus), 1, 64),
                )
            )
    unknown_hosts = sorted(set(hosts_cfg) - {h.name for h in hosts})
    if unknown_hosts:
        raise TopologyError(
            f"lab.toml [hosts.{unknown_hosts[0]}]: no such host in this topology; hosts: {', '.join(h.name for h in hosts)}"
        )
    _distinct_ips(hosts, network)
    addressed = Topology(name=name, subnet=subnet, provider=provider, app_server=app_server, hosts=tuple(hosts),
                        stack=stack)
    if addressed.floating_ip in {h.ip for h in hosts}:
        taken = next(h.name for h in hosts if h.ip == addressed.floating_ip)
        raise TopologyError(f"hosts.{taken}.ip {addressed.floating_ip} is the balancer pair's floating address; "
                            "give the host another one")
    provider_settings = {
        table: provider_schema(table).resolve(_table(f"lab.toml [{table}]", file_data.get(table, {})), environ)
        for table in PROVIDER_SETTINGS
    }
    db = _db_settings(_table("lab.toml [db]", file_data.get("db", {})), environ, overrides, preset, hosts)
    check_connection_budget(hosts, stack, appserver, db)
    return checked_for_templates(Topology(name=name, subnet=subnet, provider=provider, app_server=app_server,
                                          hosts=tuple(hosts), appserver=appserver, provider_settings=provider_settings,
                                          stack=stack, db=db))


def _boolean(where: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("1", "true", "yes", "on"):
        return True
    if str(value).lower() in ("0", "false", "no", "off"):
        return False
    raise TopologyError(f"{where} must be true or false (got {value!r})")


def _db_settings(table: Mapping[str, Any], environ: Mapping[str, str], overrides: Overrides, preset: str,
                 hosts: list[Host]) -> DbSettings:
    """[db] → LAB_POOLER/LAB_REPLICA_READS → remembered/--pooler; the primary from `lab failover db` (default db1)."""
    _unknown_keys("lab.toml [db]", table, DB_KEYS)
    pooler, where = table.get("pooler", PRESET_POOLER.get(preset, "none")), "db.pooler"
    if "LAB_POOLER" in environ:
        pooler, where = environ["LAB_POOLER"], "LAB_POOLER"
    if overrides.pooler is not None:
        pooler, where = overrides.pooler, "--pooler"
    pooler = _choice(where, pooler, POOLERS)
    db_hosts = [h.name for h in hosts if h.tier == "db"]
    replica_reads, where = table.get("replica_reads"), "db.replica_reads"
    if "LAB_REPLICA_READS" in environ:
        replica_reads, where = environ["LAB_REPLICA_READS"], "LAB_REPLICA_READS"
    if overrides.replica_reads is not None:
        replica_reads, where = overrides.replica_reads, "--replica-reads"
    if replica_reads is None:
        replica_reads = len(db_hosts) > 1  # a standby is there to be read from
    elif _boolean(where, replica_reads) and len(db_hosts) < 2:
        raise TopologyError(f"{where} needs a standby to read from: 2 db hosts (got {len(db_hosts)})")
    primary = overrides.db_primary or (db_hosts[0] if db_hosts else "db1")
    if primary not in db_hosts:
        raise TopologyError(f"the primary database {primary} (from `lab failover db`) is not among the db hosts "
                            f"({', '.join(db_hosts)}); `lab up --db=2` keeps it, or `lab failover db` makes "
                            f"{db_hosts[0] if db_hosts else 'db1'} the primary again first")
    return DbSettings(
        pooler=pooler, replica_reads=_boolean(where, replica_reads),
        max_connections=_integer("db.max_connections", table.get("max_connections", DEFAULT_MAX_CONNECTIONS),
                                 *DB_MAX_CONNECTIONS),
        pool_size=_integer("db.pool_size", table.get("pool_size", DEFAULT_POOL_SIZE), *DB_POOL_SIZE),
        primary=primary,
    )


def _appserver_settings(table: Mapping[str, Any], app_server: str) -> AppServerSettings:
    _unknown_keys("lab.toml [appserver]", table, APPSERVER_KEYS)
    workers = _integer("appserver.workers", table.get("workers", AppServerSettings().workers), *APPSERVER_WORKERS)
    threads = _integer("appserver.threads", table.get("threads", DEFAULT_THREADS[app_server]), *APPSERVER_THREADS)
    return AppServerSettings(workers=workers, threads=threads)


def _host_ip(where: str, value: Any, network: ipaddress.IPv4Network) -> str:
    try:
        address = ipaddress.IPv4Address(str(value))
    except ValueError:
        raise TopologyError(f"{where} must be an IPv4 address in {network} (got {value!r})") from None
    if address not in network or address in (network.network_address, network.broadcast_address):
        raise TopologyError(f"{where} must be a host address in {network} (got {value})")
    return str(address)


def _distinct_ips(hosts: list[Host], network: ipaddress.IPv4Network) -> None:
    gateway = str(next(network.hosts()))
    seen: dict[str, str] = {gateway: "the machine's bridge"}
    for host in hosts:
        if host.ip in seen:
            raise TopologyError(f"hosts.{host.name}.ip {host.ip} is already used by {seen[host.ip]}")
        seen[host.ip] = host.name


def with_web_count(topology: Topology, count: int) -> Topology:
    """The same lab with its web tier set to web1..webN (used by `lab bench --web=N`)."""
    spec = topology.stack.tiers["web"]
    count = _integer("--web", count, max(spec.min_count, 1), spec.max_count)
    network = ipaddress.IPv4Network(topology.subnet)
    current = {h.name: h for h in topology.tier("web")}
    template = topology.tier("web")[0]
    web = [
        current.get(f"web{i}")
        or replace(template, name=f"web{i}", ip=str(network.network_address + spec.ip_offset + i))
        for i in range(1, count + 1)
    ]
    others = [h for h in topology.hosts if h.tier != "web"]
    ordered = sorted(others + web, key=lambda h: (list(topology.stack.tiers).index(h.tier), h.name))
    _distinct_ips(ordered, network)
    check_connection_budget(ordered, topology.stack, topology.appserver, topology.db)
    return replace(topology, hosts=tuple(ordered))
