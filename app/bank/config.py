"""Load and validate the site's deployment configuration from a TOML file into a plain dict."""
import tomllib
from pathlib import Path
from urllib.parse import quote

from django.core.exceptions import ImproperlyConfigured

DEFAULT_PATH = "/etc/bank/bank.toml"

# The app directory (the one holding manage.py). Development state lives under
# it so that BANK_DEV=1 works from a plain checkout without touching /srv or /etc.
APP_DIR = Path(__file__).resolve().parent.parent
DEV_DIR = APP_DIR / ".dev"

# Only ever used when no config file exists *and* BANK_DEV is set; never reachable
# on a deployed host that has a config file.
DEV_SECRET_KEY = "dev-only-insecure-key-bank-site-never-use-in-production"

DEV_SOURCE = "development defaults (BANK_DEV)"

DB_ENGINES = ("postgresql", "sqlite")
CACHE_BACKENDS = ("locmem", "memcached")
# Seconds a memcached host may take to accept a connection or answer: a cache is worth less than a request.
CACHE_TIMEOUT_S = 1.0
# Milliseconds the site waits for a search server to accept a connection or answer, then searches the database.
SEARCH_TIMEOUT_MS = 2000
# Seconds the queue's Redis may take to accept a connection or answer one command, when a request enqueues a task.
QUEUE_TIMEOUT_S = 3.0

# key -> (accepted types, default). A default of REQUIRED means the file must set it.
REQUIRED = object()
SCHEMA = {
    "secret_key": ((str,), REQUIRED),
    "debug": ((bool,), False),
    "allowed_hosts": ((list,), []),
    "db_engine": ((str,), "postgresql"),
    "db_name": ((str,), REQUIRED),
    "db_user": ((str,), ""),
    "db_password": ((str,), ""),
    # Empty host means the local Unix socket, which is what peer auth on Debian wants.
    "db_host": ((str,), ""),
    "db_port": ((int,), 5432),
    "static_root": ((str,), "/srv/bank/static"),
    "cache": ((str,), "locmem"),
    "cache_location": ((str, list), None),
    "csrf_trusted_origins": ((list,), []),
    # Served to browsers over HTTPS (by a TLS-terminating balancer): Secure cookies, HSTS, plain HTTP redirected.
    "https": ((bool,), True),
    # The addresses of the proxies whose X-Forwarded-Proto the site believes (the balancers); anyone else's is dropped.
    "trusted_proxies": ((list,), []),
    # Step 5's pooler: the site talks to pgbouncer on 127.0.0.1 (db_host/db_port) in transaction pooling mode.
    "db_pooler": ((bool,), False),
    # Step 6's standby: a second database the read-only report is routed to (bank.routers); empty host: none.
    "replica_host": ((str,), ""),
    "replica_port": ((int,), 5432),
    "replica_name": ((str,), ""),
    # The seed's step-5 "shared nothing" anti-patterns, on for `lab demo shared-nothing` only: "global_balance" keeps
    # the balance sheet in a module-level global, "tmp_report" hands a generated report over in /tmp/report.txt.
    "antipatterns": ((list,), []),
    # Step 6's search hosts ("IP:PORT" of each xapian-tcpsrv): Haystack writes to each, reads from the first that
    # answers; none: the search page queries the database.
    "search_servers": ((list,), []),
    # The queue tier's Redis (Celery's broker, on q1); empty host: no queue, tasks run in the request (always-eager).
    "queue_host": ((str,), ""),
    "queue_port": ((int,), 6379),
    "queue_password": ((str,), ""),
}
ANTIPATTERNS = ("global_balance", "tmp_report")
# Later workshop steps add their settings in files of their own beside bank.toml, read over it in name order.
OVERLAY_DIR_NAME = "bank.d"
LIST_OF_STR_KEYS = ("allowed_hosts", "csrf_trusted_origins", "trusted_proxies", "antipatterns", "search_servers")


def dev_defaults():
    """Settings for a developer checkout: sqlite and static files under app/.dev/."""
    return {
        "secret_key": DEV_SECRET_KEY,
        "debug": True,
        "allowed_hosts": ["localhost", "127.0.0.1", "[::1]"],
        "db_engine": "sqlite",
        "db_name": str(DEV_DIR / "db.sqlite3"),
        "db_user": "",
        "db_password": "",
        "db_host": "",
        "db_port": 5432,
        "static_root": str(DEV_DIR / "static"),
        "cache": "locmem",
        "cache_location": None,
        "csrf_trusted_origins": [],
        # runserver speaks plain HTTP.
        "https": False,
        "trusted_proxies": [],
        "db_pooler": False,
        "replica_host": "",
        "replica_port": 5432,
        "replica_name": "",
        "antipatterns": [],
        "search_servers": [],
        "queue_host": "",
        "queue_port": 6379,
        "queue_password": "",
        "source": DEV_SOURCE,
    }


def load(path, dev=False):
    """Return the validated configuration read from the TOML file at ``path``.

    A missing file is only acceptable when ``dev`` is true, in which case the
    development defaults are returned; anything else that is wrong with the file
    raises ImproperlyConfigured so a misconfigured host fails at start-up rather
    than serving with surprising settings.
    """
    path = Path(path)
    if not path.exists():
        if dev:
            return dev_defaults()
        raise ImproperlyConfigured(
            f"bank configuration file {path} does not exist. Write it (see app/README.md) "
            "or point BANK_CONFIG at one; set BANK_DEV=1 to run with development defaults."
        )
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ImproperlyConfigured(f"bank configuration file {path} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ImproperlyConfigured(f"cannot read bank configuration file {path}: {exc}") from exc
    overlay_dir = path.parent / OVERLAY_DIR_NAME
    for overlay in sorted(overlay_dir.glob("*.toml")) if overlay_dir.is_dir() else ():
        try:
            with overlay.open("rb") as fh:
                raw.update(tomllib.load(fh))
        except (tomllib.TOMLDecodeError, OSError) as exc:
            raise ImproperlyConfigured(f"cannot read bank configuration file {overlay}: {exc}") from exc
    conf = validate(raw, source=str(path))
    conf["source"] = str(path)
    return conf


def validate(raw, source="<config>"):
    """Check types and values of a parsed TOML mapping and fill in defaults."""

    def fail(message):
        raise ImproperlyConfigured(f"{source}: {message}")

    unknown = sorted(set(raw) - set(SCHEMA))
    if unknown:
        # Rejecting typos (e.g. "allowed_host") beats silently running with defaults.
        fail(f"unknown key(s) {', '.join(unknown)}; known keys are {', '.join(SCHEMA)}")

    conf = {}
    for key, (types, default) in SCHEMA.items():
        if key not in raw:
            if default is REQUIRED:
                fail(f"missing required key {key!r}")
            conf[key] = list(default) if isinstance(default, list) else default
            continue
        value = raw[key]
        # bool is a subclass of int; "db_port = true" must not pass as port 1.
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            names = " or ".join(t.__name__ for t in types)
            fail(f"{key!r} must be {names}, got {type(value).__name__}")
        conf[key] = value

    for key in LIST_OF_STR_KEYS:
        if not all(isinstance(item, str) for item in conf[key]):
            fail(f"{key!r} must be a list of strings")
    if not conf["secret_key"].strip():
        fail("'secret_key' must not be empty")
    if conf["db_engine"] not in DB_ENGINES:
        fail(f"'db_engine' must be one of {', '.join(DB_ENGINES)}, got {conf['db_engine']!r}")
    if not conf["db_name"]:
        fail("'db_name' must not be empty")
    for key in ("db_port", "queue_port"):
        if not 0 < conf[key] < 65536:
            fail(f"{key!r} out of range: {conf[key]}")
    wrong = [name for name in conf["antipatterns"] if name not in ANTIPATTERNS]
    if wrong:
        fail(f"'antipatterns' may hold {', '.join(ANTIPATTERNS)}, got {wrong[0]!r}")
    for server in conf["search_servers"]:
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            fail(f"'search_servers' holds \"IP:PORT\" strings, got {server!r}")
    if conf["cache"] not in CACHE_BACKENDS:
        fail(f"'cache' must be one of {', '.join(CACHE_BACKENDS)}, got {conf['cache']!r}")
    location = conf["cache_location"]
    if isinstance(location, list) and not all(isinstance(item, str) for item in location):
        fail("'cache_location' must be a string or a list of strings")
    if conf["cache"] == "memcached" and not location:
        fail("'cache = \"memcached\"' needs 'cache_location' (e.g. \"127.0.0.1:11211\")")
    return conf


def databases(conf):
    """Build Django's DATABASES setting from a loaded configuration."""
    if conf["db_engine"] == "sqlite":
        default = {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": conf["db_name"],
        }
    else:
        default = {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": conf["db_name"],
            "USER": conf["db_user"],
            "PASSWORD": conf["db_password"],
            "HOST": conf["db_host"],
            "PORT": str(conf["db_port"]),
        }
    # Persistent connections save a connect per request; the health check makes a
    # connection that died while idle (DB restart, failover) get replaced, not reused.
    default["CONN_MAX_AGE"] = 60
    default["CONN_HEALTH_CHECKS"] = True
    if conf["db_engine"] == "postgresql" and conf["db_pooler"]:
        # Behind a transaction pooler a server-side cursor would outlive the transaction (and the server
        # connection) it was opened in: Django must not use them. Only then: they help without a pooler.
        default["DISABLE_SERVER_SIDE_CURSORS"] = True
    databases = {"default": default}
    if conf["db_engine"] == "postgresql" and conf["replica_host"]:
        databases["replica"] = {**default, "HOST": conf["replica_host"], "PORT": str(conf["replica_port"]),
                                "NAME": conf["replica_name"] or conf["db_name"]}
    return databases


def celery_settings(conf):
    """Celery's settings (as Django's CELERY_* settings) from a loaded configuration: Redis on the queue host, or
    no broker at all and every task run where it is called (always-eager) when there is no queue host."""
    common = {
        # A statement is made once: a task whose worker died is handed to another (acks_late), and the task
        # itself does nothing for a statement already ready.
        "CELERY_TASK_ACKS_LATE": True,
        "CELERY_TASK_REJECT_ON_WORKER_LOST": True,
        "CELERY_WORKER_PREFETCH_MULTIPLIER": 1,
        # The result is the Statement row in the database: no result backend to keep or expire.
        "CELERY_TASK_IGNORE_RESULT": True,
        "CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP": True,
    }
    if not conf["queue_host"]:
        return {**common, "CELERY_TASK_ALWAYS_EAGER": True, "CELERY_TASK_EAGER_PROPAGATES": True,
                "CELERY_BROKER_URL": "memory://localhost/"}
    password = quote(conf["queue_password"], safe="")
    return {
        **common,
        "CELERY_TASK_ALWAYS_EAGER": False,
        "CELERY_BROKER_URL": f"redis://:{password}@{conf['queue_host']}:{conf['queue_port']}/0",
        # A request that enqueues must not hang on an unreachable queue: seconds, not Redis's default of forever.
        "CELERY_BROKER_TRANSPORT_OPTIONS": {"socket_timeout": QUEUE_TIMEOUT_S, "socket_connect_timeout": QUEUE_TIMEOUT_S},
        "CELERY_BROKER_CONNECTION_TIMEOUT": QUEUE_TIMEOUT_S,
        "CELERY_TASK_PUBLISH_RETRY_POLICY": {"max_retries": 1, "interval_start": 0, "interval_step": 0.5},
    }


def caches(conf):
    """Build Django's CACHES setting from a loaded configuration."""
    if conf["cache"] == "memcached":
        # One client over every cache host (pymemcache's hashing spreads the keys);
        # pymemcache is pinned in requirements.txt.
        backend = {
            "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
            "LOCATION": conf["cache_location"],
            # pymemcache waits for ever by default: a cache host that stops answering (stopped, firewalled, paused)
            # would hold every request that touches the cache. After a timeout the request fails and pymemcache
            # retries that host later, then drops it from the hash ring and spreads its keys over the others.
            "OPTIONS": {"connect_timeout": CACHE_TIMEOUT_S, "timeout": CACHE_TIMEOUT_S},
        }
    else:
        backend = {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "bank",
        }
    return {"default": backend}


SEARCH_ENGINE = "accounts.search_backend.RemoteXapianEngine"
SIMPLE_ENGINE = "haystack.backends.simple_backend.SimpleEngine"


def search_alias(index):
    """Haystack's name for the index-th search server: "default" for the first (Haystack requires one)."""
    return "default" if index == 0 else f"search{index + 1}"


def haystack_connections(conf):
    """Build HAYSTACK_CONNECTIONS: one connection per search server, or Haystack's simple backend when there is none
    (the search page then queries the database itself, accounts.search)."""
    if not conf["search_servers"]:
        return {"default": {"ENGINE": SIMPLE_ENGINE}}
    connections = {}
    for index, server in enumerate(conf["search_servers"]):
        host, _, port = server.rpartition(":")
        connections[search_alias(index)] = {
            "ENGINE": SEARCH_ENGINE, "HOST": host, "PORT": int(port), "TIMEOUT_MS": SEARCH_TIMEOUT_MS,
        }
    return connections
