"""Step 3 checks on the web hosts: the lab's one app server (Gunicorn or mod_wsgi), on the private IP only, as bank."""

import json
import re

import pytest

from provision.step1_bootstrap.recipes import APP_SERVER_TIERS

TIERS = APP_SERVER_TIERS  # the web hosts, and step 6's api hosts (the same site and app server)
# `lab check`: one line per check, what to try when it fails (lab/workshop.py prints it).
HINTS = {
    "test_app_port_bound_to_private_ip_only": "bind the app server to the host's private IP, port 8000 (Gunicorn's --bind IP:8000), not 0.0.0.0",
    "test_app_port_held_by_the_labs_app_server_alone": "stop whatever else holds port 8000 (`ss -ltnp 'sport = :8000'`), leave the lab's app server",
    "test_unused_app_servers_stopped_and_disabled": "`systemctl disable --now` the app server this lab does not use (gunicorn or apache2) and bank-devserver",
    "test_health_reports_the_database_reachable": "`curl http://<web IP>:8000/health/`; `journalctl -u gunicorn` says why the site cannot reach its database",
    "test_static_files_collected_with_manifest": "as bank in /srv/bank/current: `manage.py collectstatic --noinput` (STATIC_ROOT /srv/bank/static)",
    "test_gunicorn_enabled_and_running": "write /etc/systemd/system/gunicorn.service, `systemctl daemon-reload && systemctl enable --now gunicorn`",
    "test_gunicorn_runs_as_the_app_user": "User=bank and Group=bank in gunicorn.service, then `systemctl restart gunicorn`",
    "test_gunicorn_runs_the_configured_workers": "--workers and --threads in gunicorn.service as [appserver] in lab.toml says, then restart",
    "test_apache_enabled_and_running": "`systemctl enable --now apache2`; `apache2ctl configtest` says what is wrong",
    "test_apache_loads_mod_wsgi": "install the package libapache2-mod-wsgi-py3, `a2enmod wsgi`, then restart apache2",
    "test_apache_listens_on_the_app_port_only": "only `Listen <web IP>:8000` in /etc/apache2/ports.conf; `a2dissite 000-default`",
    "test_wsgi_daemon_processes_run_as_the_app_user": "WSGIDaemonProcess bank user=bank group=bank processes=N threads=M in the bank site",
    "test_no_python_in_apaches_own_workers": "WSGIRestrictEmbedded On and WSGIProcessGroup bank: only the daemons load the site",
}
APP_PORT = 8000
SERVER_UNITS = {"gunicorn": "gunicorn", "mod_wsgi": "apache2"}  # the unit behind each app server
SERVER_PROGRAMS = {"gunicorn": "gunicorn", "mod_wsgi": "apache2"}  # who may hold the app port


@pytest.fixture
def on_gunicorn(lab):
    if lab.app_server != "gunicorn":
        pytest.skip(f"this lab runs {lab.app_server}")


@pytest.fixture
def on_mod_wsgi(lab):
    if lab.app_server != "mod_wsgi":
        pytest.skip(f"this lab runs {lab.app_server}")


def listeners(host, port=None):
    """(local address, set of program names) for each listening TCP socket, optionally on one port only."""
    selector = f" 'sport = :{port}'" if port else ""
    with host.sudo():  # process names need root
        lines = host.check_output(f"ss -Hltnp{selector}").splitlines()
    return [(line.split()[3], set(re.findall(r'\("([^"]+)",pid=', line))) for line in lines]


# -- whichever app server the lab runs ----------------------------------------------------------------


def test_app_port_bound_to_private_ip_only(host, node):
    assert host.socket(f"tcp://{node.ip}:{APP_PORT}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{APP_PORT}").is_listening
    assert not host.socket(f"tcp://127.0.0.1:{APP_PORT}").is_listening


def test_app_port_held_by_the_labs_app_server_alone(host, node, lab):
    assert listeners(host, APP_PORT) == [(f"{node.ip}:{APP_PORT}", {SERVER_PROGRAMS[lab.app_server]})]


def test_unused_app_servers_stopped_and_disabled(host, lab):
    # the app server not chosen, and step 1's development server, which step 3 replaces
    for unit in [u for server, u in SERVER_UNITS.items() if server != lab.app_server] + ["bank-devserver"]:
        service = host.service(unit)
        assert not service.is_running, f"{unit} runs beside {lab.app_server}"
        assert not service.is_enabled, f"{unit} would start at boot beside {lab.app_server}"


def test_health_reports_the_database_reachable(host, node):
    body = host.check_output(
        f"python3 -c \"import urllib.request; print(urllib.request.urlopen('http://{node.ip}:8000/health/', timeout=5).read().decode())\""
    )
    assert json.loads(body) == {"status": "ok", "db": True}


def test_static_files_collected_with_manifest(host):
    assert host.file("/srv/bank/static/staticfiles.json").exists
    assert host.file("/srv/bank/static/accounts/site.css").exists


# -- Gunicorn -----------------------------------------------------------------------------------------


@pytest.mark.usefixtures("on_gunicorn")
def test_gunicorn_enabled_and_running(host):
    service = host.service("gunicorn")
    assert service.is_enabled
    assert service.is_running


@pytest.mark.usefixtures("on_gunicorn")
def test_gunicorn_runs_as_the_app_user(host):
    workers = host.process.filter(comm="gunicorn")
    assert workers, "no gunicorn processes"
    assert {p.user for p in workers} == {"bank"}


@pytest.mark.usefixtures("on_gunicorn")
def test_gunicorn_runs_the_configured_workers(host, lab):
    assert len(host.process.filter(comm="gunicorn")) == 1 + lab.appserver.workers  # the arbiter and its workers
    # gthread starts its threads on demand: how many a worker may run is on its command line.
    assert f"--threads {lab.appserver.threads} " in host.check_output("systemctl show -P ExecStart gunicorn")


# -- Apache mod_wsgi --------------------------------------------------------------------------------------


@pytest.mark.usefixtures("on_mod_wsgi")
def test_apache_enabled_and_running(host):
    service = host.service("apache2")
    assert service.is_enabled
    assert service.is_running


@pytest.mark.usefixtures("on_mod_wsgi")
def test_apache_loads_mod_wsgi(host):
    with host.sudo():
        modules = host.check_output("apache2ctl -M 2>/dev/null")
    assert re.search(r"^\s*wsgi_module \(shared\)$", modules, re.M), modules


@pytest.mark.usefixtures("on_mod_wsgi")
def test_apache_listens_on_the_app_port_only(host, node):
    held = [address for address, programs in listeners(host) if "apache2" in programs]
    assert held == [f"{node.ip}:{APP_PORT}"]


@pytest.mark.usefixtures("on_mod_wsgi")
def test_wsgi_daemon_processes_run_as_the_app_user(host, lab):
    daemons = [p for p in host.process.filter(comm="apache2") if p.args.startswith("(wsgi:bank)")]
    assert len(daemons) == lab.appserver.workers, [p.args for p in daemons]
    assert {p.user for p in daemons} == {"bank"}
    for daemon in daemons:  # the request threads, plus mod_wsgi's own few
        threads = int(host.check_output(f"ps -o nlwp= -p {daemon.pid}"))
        assert threads >= lab.appserver.threads


@pytest.mark.usefixtures("on_mod_wsgi")
def test_no_python_in_apaches_own_workers(host):
    """Daemon mode only (WSGIRestrictEmbedded): Apache's www-data workers never load the site."""
    workers = host.process.filter(comm="apache2", user="www-data")
    assert workers, "no Apache workers"
    with host.sudo():
        for worker in workers:
            maps = host.check_output(f"cat /proc/{worker.pid}/maps")
            assert "/srv/bank/venv" not in maps
