"""Step 3 recipes: static files collected, and one app server (Gunicorn or Apache mod_wsgi) on the host's private IP,
replacing step 1's development server; on web hosts, and on step 6's api hosts alike."""

from __future__ import annotations

from lab.recipes import RecipeError, Target, quoted, recipe
from lab.system import gist
from provision.step1_bootstrap.recipes import (APP_HOME, APP_PORT, APP_SERVER_TIERS, APP_USER, CURRENT, DEVSERVER_UNIT,
                                               SETTINGS, STATIC_ROOT, VENV, manage)
# The systemd unit behind each app server lab.toml may name: the ones not chosen are kept stopped and disabled.
SERVER_UNITS = {"gunicorn": "gunicorn", "mod_wsgi": "apache2"}
WSGI_SCRIPT_NAME = "bank.wsgi"
WSGI_SCRIPT = f"{APP_HOME}/{WSGI_SCRIPT_NAME}"
WSGI_SOCKET_PREFIX = "/run/apache2/wsgi"  # /run/apache2 is Apache's run dir: root's, readable by www-data
APACHE_SITE = "/etc/apache2/sites-available/bank.conf"
APACHE_DEFAULT_SITE = "/etc/apache2/sites-enabled/000-default.conf"
WARM_UP_SECONDS = 60
HEALTH_PATH = "/health/"  # the site's health check: 200 once it can serve (database reachable)


KEEPALIVE_S = 75
# How long one request may run. Gunicorn's own default (30 s) would kill a worker while the balancer still waits
# (nginx's proxy_read_timeout, set to this too): the user gets a 502 and the worker's other requests die with it.
# A login hashes its password (PBKDF2): about a second natively, well over ten on an emulated VM under load.
REQUEST_TIMEOUT_S = 60


@recipe(tiers=APP_SERVER_TIERS)
def static_files(t: Target) -> None:
    """collectstatic once per release: a marker names the release the static tree was collected from."""
    release = t.run("readlink %s", CURRENT).stdout.strip()
    marker = f"{STATIC_ROOT}/.lab-release"
    t.directory(STATIC_ROOT, 0o755, APP_USER, APP_USER)
    if t.run("cat %s 2>/dev/null", marker, check=False).stdout.strip() == release:
        return
    t.run(manage("collectstatic --noinput --clear -v 0"), user=APP_USER)
    t.run("echo %s > %s", release, marker, user=APP_USER)
    t.changed(f"collected static files for {release.rsplit('/', 1)[-1]}", "static")


def _stopped_and_disabled(t: Target, unit: str) -> None:
    # "activating" too: a unit in its restart loop would take the port back.
    if _active(t, unit):
        t.run("systemctl stop %s", unit)
        t.changed(f"stopped {unit}")
    if t.test("systemctl is-enabled --quiet %s", unit):
        t.run("systemctl disable --quiet %s", unit)
        t.changed(f"disabled {unit}")


def _active(t: Target, unit: str) -> bool:
    return t.run("systemctl is-active %s", unit, check=False).stdout.strip() not in ("inactive", "failed", "unknown", "")


def _serve(t: Target, unit: str, reconfigured: bool) -> None:
    """The lab's app server serving on the app port, every other one stopped and disabled (only one can hold the
    port). Restarting or switching a host that serves happens in a rolling window: one web host at a time, out of
    the balancer's pool while other hosts can serve, back once its health check passed. The only host that
    serves is reloaded in place instead, as gracefully as its server allows (a changed unit or site still restarts it).
    """
    # The app server not chosen, and step 1's development server: only one can hold the port.
    others = [u for server, u in SERVER_UNITS.items() if server != t.topology.app_server] + [DEVSERVER_UNIT]
    switching = [u for u in others if _active(t, u)]
    running = t.test("systemctl is-active --quiet %s", unit)
    # A run interrupted between switching `current` and the restart left no event behind: ask the processes.
    refresh = reconfigured or t.notified("app-code", "app-config") or (running and not _in_current_release(t))
    if not (running and refresh) and not (switching and not running):  # nothing that serves requests stops
        for other in others:
            _stopped_and_disabled(t, other)
        started = t.service(unit)
        t.wait_for_port(t.host.ip, APP_PORT)
        if started:
            _warm_up(t, unit)
        return
    with t.rolling(f"switching {' and '.join(switching)} to {unit}" if switching else f"restarting {unit}") as drained:
        for other in others:  # `systemctl stop` returns once their processes, and the port, are gone
            _stopped_and_disabled(t, other)
        in_place = running and not drained and not reconfigured
        t.service(unit, restart=not in_place, reload=in_place)
        t.wait_for_port(t.host.ip, APP_PORT)
        _warm_up(t, unit)
        _serving_current_release(t, unit)


@recipe(tiers=APP_SERVER_TIERS)
def gunicorn(t: Target) -> None:
    """Gunicorn as a systemd service, when the lab's app server is gunicorn."""
    if t.topology.app_server != "gunicorn":
        return
    tuning = t.topology.appserver
    unit_changed = t.template(
        "/etc/systemd/system/gunicorn.service", "step3_appserver/templates/gunicorn.service.j2",
        user=APP_USER, current=CURRENT, settings=SETTINGS, venv=VENV, port=APP_PORT, workers=tuning.workers,
        # The sync worker takes one request at a time; threads need the gthread worker.
        worker_class="gthread" if tuning.threads > 1 else "sync", threads=tuning.threads,
        # gthread keeps nginx's upstream connections open: longer than nginx's 60 s idle timeout, so nginx (not
        # Gunicorn) closes idle ones and never sends a POST down a connection Gunicorn is closing.
        keepalive_s=KEEPALIVE_S, request_timeout_s=REQUEST_TIMEOUT_S,
    )
    if unit_changed:
        t.run("systemctl daemon-reload")
    _serve(t, "gunicorn", reconfigured=unit_changed)


@recipe(tiers=APP_SERVER_TIERS)
def mod_wsgi(t: Target) -> None:
    """Apache 2.4 with mod_wsgi daemon processes running the site's venv as the app user, when the lab asks for it."""
    if t.topology.app_server != "mod_wsgi":
        return
    tuning = t.topology.appserver
    t.packages("apache2", "libapache2-mod-wsgi-py3")
    changed = t.template(WSGI_SCRIPT, "step3_appserver/templates/bank.wsgi.j2", settings=SETTINGS)
    changed |= t.template("/etc/apache2/ports.conf", "step3_appserver/templates/apache-ports.conf.j2", port=APP_PORT)
    changed |= t.template(
        APACHE_SITE, "step3_appserver/templates/apache-bank.conf.j2",
        user=APP_USER, venv=VENV, current=CURRENT, port=APP_PORT, processes=tuning.workers, threads=tuning.threads,
        socket_prefix=WSGI_SOCKET_PREFIX, script=WSGI_SCRIPT, script_dir=APP_HOME, script_name=WSGI_SCRIPT_NAME,
    )
    if not t.test("test -e /etc/apache2/mods-enabled/wsgi.load"):
        t.run("a2enmod -q wsgi")
        t.changed("enabled Apache module wsgi")
        changed = True
    if not t.test("test -e /etc/apache2/sites-enabled/bank.conf"):
        t.run("a2ensite -q bank")
        t.changed("enabled the bank site")
        changed = True
    changed |= t.absent(APACHE_DEFAULT_SITE)  # Debian's default site: a second virtual host on port 80
    if changed:
        check = t.run("apache2ctl configtest", check=False)
        if not check.ok:
            raise RecipeError(f"Apache rejects the new configuration: {gist(check.stderr or check.stdout)}")
    # A changed configuration means a restart, not a graceful reload: Listen, WSGISocketPrefix and the daemons'
    # definition are only re-read reliably by a new Apache. A new release alone: a graceful reload restarts the daemons.
    _serve(t, "apache2", reconfigured=changed)


def _warm_up(t: Target, unit: str, seconds: float = WARM_UP_SECONDS) -> None:
    """The health check after a (re)start, from the host itself: the balancer's first request finds the site
    ready, and a site that cannot answer fails this recipe rather than `lab test`."""
    url = f"http://{t.host.ip}:{APP_PORT}{HEALTH_PATH}"
    script = (
        "import sys, time, urllib.request\n"
        "opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))\n"
        "deadline = time.monotonic() + float(sys.argv[2])\n"
        "while True:\n"
        "    try:\n"
        "        with opener.open(sys.argv[1], timeout=10) as response:\n"
        "            sys.exit(0)\n"
        "    except Exception as error:\n"
        "        if time.monotonic() > deadline:\n"
        "            sys.exit(f'{sys.argv[1]}: {error}')\n"
        "        time.sleep(0.5)\n"
    )
    result = t.run("python3 -c %s %s %s", script, url, seconds, check=False)
    if not result.ok:
        raise RecipeError(f"the site did not answer after {unit} started: {gist(result.stderr)}")


# Exits 0 when every process of the app user (the app server's workers and daemons) runs in the release `current`
# points at: Gunicorn (--chdir) and mod_wsgi (home=) enter `current` when they start, so their cwd names it.
IN_CURRENT_RELEASE = (
    f'want=$(readlink -f {CURRENT}); for p in $(pgrep -u {APP_USER}); do '
    f'cwd=$(readlink /proc/$p/cwd) || continue; [ "$cwd" = "$want" ] || exit 1; done'  # gone meanwhile: not stale
)


def _in_current_release(t: Target) -> bool:
    return t.test("sh -c %s", IN_CURRENT_RELEASE)


def _serving_current_release(t: Target, unit: str, seconds: float = WARM_UP_SECONDS) -> None:
    """Wait until every process of the app user runs in the current release: after a graceful reload, old
    workers finish their requests first; until then a request may still reach the old release."""
    wait = quoted("until sh -c %s; do sleep 0.2; done", IN_CURRENT_RELEASE)
    if not t.test("timeout %s sh -c %s", seconds, wait):
        raise RecipeError(f"{unit} still runs an old release {seconds} s after its restart")
