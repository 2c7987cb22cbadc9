"""Step 1 recipes: hosts know each other, packages come through the proxy, each host's firewall follows the stack's
links, the site's code, venv and settings are in place, and (while the workshop is at steps 1–2) Django's
development server answers on web1, on SQLite until step 2 gives the site PostgreSQL."""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import tarfile
from typing import Any, Mapping

from lab.machine import wheels
from lab.recipes import PROJECT_ROOT, RecipeError, Target, recipe
from lab.stack import all_tiers

APP_SOURCE = PROJECT_ROOT / "app"
APP_USER = "bank"
APP_HOME = "/srv/bank"
VENV = f"{APP_HOME}/venv"
PIP = f"{VENV}/bin/pip"
# pip's defaults are 5 retries and a 15 s socket timeout; a fresh-machine run's emulated VM lost its install to
# "Connection reset by peer" from PyPI while a 13-host lab shared the cores.
PYPI_RETRIES = 10
PYPI_TIMEOUT_S = 60
VENV_MARKER = f"{VENV}/.lab-complete"  # written last: a venv without it is half-made
RELEASES = f"{APP_HOME}/releases"
CURRENT = f"{APP_HOME}/current"
PREVIOUS = f"{APP_HOME}/previous"  # the release `current` pointed at before its last switch
REQUIREMENTS = f"{APP_HOME}/requirements.txt"
BUILT_WHEELS = f"{APP_HOME}/wheels"  # on a host without the machine's wheel cache: the wheels PyPI does not have
SKIPPED_PARTS = {"__pycache__", ".dev", ".pytest_cache"}
# The tiers whose app server answers the balancer: the web hosts serve the site's pages, the api hosts (step 6) its
# JSON API under /api/; the same release, venv, settings and app server on both.
APP_SERVER_TIERS = ("web", "api")
# The links those app servers are balanced over: "app" (every path) and "api" (/api/ only, to the api hosts).
BALANCED_PURPOSES = ("app", "api")
# The tiers that run the site's code (its user, venv, release and settings): the app servers serve it, the q hosts'
# Celery workers (step 6) run its tasks.
SITE_TIERS = (*APP_SERVER_TIERS, "q")


@recipe(tiers=all_tiers())
def hosts_file(t: Target) -> None:
    t.template("/etc/hosts", "step1_bootstrap/templates/hosts.j2")


@recipe(tiers=all_tiers())
def package_proxy(t: Target) -> None:
    if t.facts.proxy_url:
        t.template("/etc/apt/apt.conf.d/80lab-proxy", "step1_bootstrap/templates/apt-proxy.conf.j2", proxy_url=t.facts.proxy_url)
        t.template("/etc/pip.conf", "step1_bootstrap/templates/pip.conf.j2", proxy_url=t.facts.proxy_url)
    else:
        t.absent("/etc/apt/apt.conf.d/80lab-proxy")
        t.absent("/etc/pip.conf")


@recipe(tiers=all_tiers())
def firewall(t: Target) -> None:
    """nftables with a default-drop input policy; a port open only to the hosts a link of the stack lets in."""
    t.packages("nftables")
    with t.owed("nftables-restart") as earlier_change:
        changed = t.template(
            "/etc/nftables.conf", "step1_bootstrap/templates/nftables.conf.j2", 0o755,
            rules=t.topology.inbound(t.host, t.facts.control_address),
        )
        if changed or earlier_change:
            t.run("nft -c -f /etc/nftables.conf")
        t.service("nftables", restart=changed or earlier_change)


@recipe(tiers=SITE_TIERS)
def app_user(t: Target) -> None:
    if not t.test("id -u %s", APP_USER):
        t.run("useradd --system --home-dir %s --no-create-home --shell /usr/sbin/nologin %s", APP_HOME, APP_USER)
        t.changed(f"created system user {APP_USER}")
    t.directory(APP_HOME, 0o755, "root", "root")
    t.directory(RELEASES, 0o755, "root", "root")


@recipe(tiers=APP_SERVER_TIERS)
def tools(t: Target) -> None:
    """curl: what each step's docs use to show what answers on a web or api host (`lab ssh web1 curl -si ...`)."""
    t.packages("curl")


def pinned_requirements() -> dict[str, str]:
    return {name: version for _, name, version in wheels.pins((APP_SOURCE / "requirements.txt").read_text())}


@recipe(tiers=SITE_TIERS)
def virtualenv(t: Target) -> None:
    """The site's pinned requirements in a venv of the host's own Python 3.11 (mod_wsgi needs the same one),
    installed with `--require-hashes`: the hashes are those of the wheels the machine downloaded itself."""
    t.packages("python3-venv")
    # A venv is made by several programs (venv, then ensurepip) and its scripts embed its path, so it cannot be
    # made aside and moved: one without its marker is half-made (e.g. bin/python but no bin/pip) and made again.
    # Installs hold the same lock (the marker's): a pip left going by an interrupt never writes into a venv being remade.
    if t.completed(VENV_MARKER, "rm -rf %s && python3 -m venv %s", VENV, VENV):
        t.changed(f"created virtualenv {VENV}")
    pinned = (APP_SOURCE / "requirements.txt").read_text()
    try:
        # The machine downloads each wheel once into its cache (hosts only read it, where the provider shares
        # it) and hashes what it downloaded: a host installs exactly those files or nothing.
        cache = wheels.ensure_wheels(pinned)
        hashed = wheels.hashed_requirements(pinned, cache)
    except wheels.WheelsUnavailable as error:
        raise RecipeError(str(error)) from None
    t.file(REQUIREMENTS, hashed)
    if not t.facts.wheelhouse:
        # A host downloading from PyPI gets the wheels the machine built (and hashed) itself beside it: a wheel
        # pip built on the host from the source release would carry other timestamps, so another hash.
        t.directory(BUILT_WHEELS)
        for wheel in wheels.built_wheels(pinned, cache):
            t.file(f"{BUILT_WHEELS}/{wheel.name}", wheel.read_bytes())
    missing = _missing_requirements(t)
    if not missing:
        return
    if t.facts.wheelhouse:
        t.run(t.locked(VENV_MARKER, "%s install -q --require-hashes --no-index --find-links %s -r %s",
                       PIP, t.facts.wheelhouse, REQUIREMENTS))
    else:  # from PyPI itself (a VM through its NAT): patient with a slow (emulated) host and a reset connection
        t.run(t.locked(VENV_MARKER, "%s install -q --require-hashes --retries %s --timeout %s --find-links %s -r %s",
                       PIP, PYPI_RETRIES, PYPI_TIMEOUT_S, BUILT_WHEELS, REQUIREMENTS))
    t.changed(f"installed {', '.join(missing)}", "app-code")


def _missing_requirements(t: Target) -> list[str]:
    script = (
        "import importlib.metadata as m, re, sys\n"
        "def norm(n): return re.sub(r'[-_.]+', '-', n).lower()\n"
        "have = {norm(d.metadata['Name']): d.version for d in m.distributions()}\n"
        "want = dict(a.split('==') for a in sys.argv[1:])\n"
        "print(' '.join(f'{n}=={v}' for n, v in want.items() if have.get(n) != v))\n"
    )
    pins = [f"{name}=={version}" for name, version in pinned_requirements().items()]
    result = t.run("%s -c %s" + " %s" * len(pins), f"{VENV}/bin/python", script, *pins)
    return result.stdout.split()


def app_archive() -> tuple[str, bytes]:
    """The site as a reproducible tarball and its content hash (the release name)."""
    files = sorted(
        p for p in APP_SOURCE.rglob("*")
        if p.is_file() and not SKIPPED_PARTS.intersection(p.relative_to(APP_SOURCE).parts) and p.suffix != ".pyc"
    )
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(APP_SOURCE)).encode() + b"\0" + path.read_bytes() + b"\0")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in files:
            info = tarfile.TarInfo(str(path.relative_to(APP_SOURCE)))
            data = path.read_bytes()
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            archive.addfile(info, io.BytesIO(data))
    return digest.hexdigest()[:12], buffer.getvalue()


@recipe(tiers=SITE_TIERS)
def release(t: Target) -> None:
    """The site's code as an immutable release folder; `current` points at it (switched atomically)."""
    name, archive = app_archive()
    folder = unpack_release(t, name, archive)
    if switch_current(t, folder):
        t.changed(f"switched {CURRENT} to release {name}", "app-code")


def unpack_release(t: Target, name: str, archive: bytes) -> str:
    """The release folder `name` on the host, unpacked from archive unless it is there already; its path.

    Shared with `lab deploy` (lab/deploy.py), which unpacks on every web host before switching any.
    """
    folder = f"{RELEASES}/{name}"
    if not t.test("test -f %s", f"{folder}/manage.py"):
        # Unpacked aside and renamed into place: the folder exists only complete. The upload has a name of this
        # run's own (a half-uploaded file of an interrupted run is never unpacked), and the unpacking holds the
        # release's lock (a re-run waits for an unpacking an interrupted run left going on the host).
        upload = f"/tmp/.lab-release-{name}-{secrets.token_hex(4)}.tar.gz"
        t.remote.put(archive, upload)
        t.run(t.locked(folder, (
            f"trap 'rm -f {upload}' EXIT; test -f {folder}/manage.py && exit 0; "
            f"rm -rf {folder}.tmp && mkdir -p {folder}.tmp && tar -xzf {upload} -C {folder}.tmp && mv -T {folder}.tmp {folder}"
        )))
        t.changed(f"unpacked release {name}")
    return folder


def switch_current(t: Target, folder: str) -> bool:
    """`current` atomically to folder; `previous` keeps the release it left (what `lab rollback` goes back to)."""
    before = t.run("readlink %s", CURRENT, check=False).stdout.strip()
    if before == folder:
        return False
    if before:
        t.run(f"ln -sfn {before} {PREVIOUS}.new && mv -T {PREVIOUS}.new {PREVIOUS}")
    t.run(f"ln -sfn {folder} {CURRENT}.new && mv -T {CURRENT}.new {CURRENT}")
    return True


# The site's settings file: shared with the database step (its database and role) and the app servers.
SETTINGS_DIR = "/etc/bank"
SETTINGS = f"{SETTINGS_DIR}/bank.toml"
SETTINGS_MODE = 0o640  # root:bank
STATIC_ROOT = "/srv/bank/static"
DATABASE = "bank"
ROLE = "bank"


SQLITE_DIR = f"{APP_HOME}/data"  # the workshop's first database: SQLite (and its journal) in a folder of the app user's own
SQLITE_DB = f"{SQLITE_DIR}/site.sqlite3"
OVERLAY_DIR = f"{SETTINGS_DIR}/bank.d"  # later steps' settings, one file each, read over bank.toml in name order
DATABASE_OVERLAY = "database"  # step 2's: PostgreSQL instead of SQLite
SCHEMA_LOCK = "bank-schema"  # migrations and sample data, one at a time
E2E_CUSTOMERS = 2  # customer0001 and customer0002, for step 5's end-to-end checks through the balancer
DEVSERVER_UNIT = "bank-devserver"
DEVSERVER = f"/etc/systemd/system/{DEVSERVER_UNIT}.service"
APP_PORT = 8000  # where the site answers on a web host: the development server, then step 3's app server


@recipe(tiers=SITE_TIERS)
def site_settings(t: Target) -> None:
    """The site's settings from the stack's links: the proxies that send it requests, SQLite as its database (the
    workshop's start: step 2's own settings file gives it PostgreSQL)."""
    proxies = list(dict.fromkeys(h for purpose in BALANCED_PURPOSES for h in t.topology.clients(t.host, purpose)))
    allowed = [h.ip for h in proxies] + [h.name for h in proxies] + [t.host.ip, t.host.name, "localhost"]
    allowed += [t.topology.floating_ip] if t.topology.floating_ip else []  # the balancer pair's: the site's address
    t.directory(SETTINGS_DIR, 0o750, "root", APP_USER)
    # root:bank 0640: the site reads its settings and cannot rewrite them (a hijacked app cannot turn DEBUG on or
    # point itself at another database); t.template writes a file others may not read through stdin, atomically.
    t.template(
        SETTINGS, "step1_bootstrap/templates/bank.toml.j2", SETTINGS_MODE, "root", APP_USER, events=("app-config",),
        secret_key=t.secrets["django_secret_key"], allowed_hosts=allowed, sqlite_db=SQLITE_DB,
        static_root=STATIC_ROOT, trusted_proxies=[h.ip for h in proxies],
    )


def write_site_overlay(t: Target, name: str, values: Mapping[str, Any]) -> bool:
    """A later step's part of the site's settings: /etc/bank/bank.d/NAME.toml (none: removed), root:bank 0640 like
    bank.toml (the site reads it, cannot rewrite it). A change is an "app-config" event: an app server this converge
    starts later restarts on it; a step after step 3 restarts the app server itself (step 5's site_overlay)."""
    t.directory(OVERLAY_DIR, 0o750, "root", APP_USER)
    path = f"{OVERLAY_DIR}/{name}.toml"
    if not values:
        return t.absent(path)
    body = f"# managed by lab: {name} settings of the site\n" + "".join(
        f"{key} = {json.dumps(value)}\n" for key, value in values.items())
    return t.file(path, body, SETTINGS_MODE, "root", APP_USER, events=("app-config",))


def manage(command: str) -> str:
    """manage.py of the release `current` names, with the site's settings."""
    return f"cd {CURRENT} && BANK_CONFIG={SETTINGS} {VENV}/bin/python manage.py {command}"


def schema_and_sample_data_in(t: Target, where: str) -> None:
    """Migrations and sample data in the database the site's settings name now (`where` says which, for the report).

    Each is interrupt-safe in itself (a migration and its record commit in one transaction; the sample data loads
    in one transaction), but an interrupted run leaves the command going on the host: both hold one lock, so a
    re-run waits for it instead of racing it into duplicate tables or rows.
    """
    if not t.test(manage("migrate --check --noinput"), user=APP_USER):
        t.run(t.locked(SCHEMA_LOCK, manage("migrate --noinput")), user=APP_USER)
        t.changed(f"applied migrations ({where})")
    # Two customers: step 5's end-to-end checks prove through the balancer that neither sees or moves the other's money.
    # The demo password arrives on stdin and goes to the command through its environment (not ps, not sudo's log).
    load = "IFS= read -r BANK_DEMO_PASSWORD && export BANK_DEMO_PASSWORD && " + manage(
        f"load_sample_data --sync-demo-password --customers {E2E_CUSTOMERS}")
    loaded = t.run(t.locked(SCHEMA_LOCK, load), user=APP_USER, stdin=t.secrets["demo_password"] + "\n").stdout
    if "already" not in loaded or "created" in loaded or "updated" in loaded:
        t.changed(f"loaded sample data ({where})")


@recipe(tiers=("web",), first_only=True, until_step=2)
def devserver(t: Target) -> None:
    """The workshop's first running app instance: Django's development server on web1's private address, on
    SQLite until step 2 gives the site PostgreSQL. Step 3's app server replaces it, so a `lab up` past step 2 never
    runs this recipe (step 3 stops and disables the unit)."""
    t.directory(SQLITE_DIR, 0o700, APP_USER, APP_USER)
    on_postgresql = t.test("test -e %s", f"{OVERLAY_DIR}/{DATABASE_OVERLAY}.toml")  # step 2 done before
    schema_and_sample_data_in(t, "PostgreSQL" if on_postgresql else "SQLite")
    with t.owed("devserver-restart") as earlier_change:  # a change made by a run interrupted before the restart
        unit_changed = t.template(DEVSERVER, "step1_bootstrap/templates/bank-devserver.service.j2", user=APP_USER,
                                  current=CURRENT, settings=SETTINGS, venv=VENV, port=APP_PORT)
        if unit_changed:
            t.run("systemctl daemon-reload")
        t.service(DEVSERVER_UNIT, restart=unit_changed or earlier_change or t.notified("app-code", "app-config"))
    t.wait_for_port(t.host.ip, APP_PORT)
