"""Step 2 checks on the web hosts: settings with per-lab secrets (root:bank 0640, DEBUG off), the site on PostgreSQL
instead of step 1's SQLite, and the schema migrated.

The settings file holds the database password and SECRET_KEY: checks parse it on the host and bring back only the
key they look at, so a failing check can never print the file (to the terminal or the JUnit XML)."""

import json
import shlex

from provision.step1_bootstrap.recipes import APP_SERVER_TIERS
from provision.step2_database.recipes import SETTINGS_FILES, STARTED_BEFORE_SETTINGS

TIERS = APP_SERVER_TIERS  # the web hosts, and step 6's api hosts (the same site and app server)
SETTINGS = "/etc/bank/bank.toml"
DATABASE_SETTINGS = "/etc/bank/bank.d/database.toml"  # step 2's own: PostgreSQL, with the lab's role and password
MANAGE = "cd /srv/bank/current && sudo -u bank BANK_CONFIG=/etc/bank/bank.toml /srv/bank/venv/bin/python manage.py"

# `lab check`: one line per check, what to try when it fails (lab/workshop.py prints it).
HINTS = {
    "test_settings_file_is_readable_by_the_app_and_writable_by_root_only": "`chown root:bank /etc/bank /etc/bank/bank.toml && chmod 750 /etc/bank && chmod 640 /etc/bank/bank.toml` (and bank.d/*.toml alike)",
    "test_the_site_uses_postgresql": "write /etc/bank/bank.d/database.toml (db_engine = \"postgresql\", db_name, db_user, db_password, db_host, db_port), root:bank 0640; restart what serves the site",
    "test_the_app_user_cannot_rewrite_its_settings": "`sudo -u bank test -w /etc/bank/bank.toml` must fail: root owns the file (0640) and /etc/bank (0750), bank is its group",
    "test_debug_is_off": "set debug = false in /etc/bank/bank.toml",
    "test_what_serves_the_site_started_after_its_settings_changed": "restart what serves the site after changing its settings: `systemctl restart bank-devserver` (step 3 on: the app server)",
    "test_schema_is_migrated_in_the_shared_database": "as bank in /srv/bank/current: `BANK_CONFIG=/etc/bank/bank.toml ../venv/bin/python manage.py migrate`",
}


def setting(host, key):
    """One key of the settings file, parsed on the host by its own Python; only that value comes back."""
    script = (
        "import json, sys, tomllib\n"
        "data = tomllib.load(open(sys.argv[1], 'rb'))\n"
        "print(json.dumps({'present': sys.argv[2] in data, 'value': data.get(sys.argv[2])}))\n"
    )
    with host.sudo():
        result = host.run(f"python3 -c {shlex.quote(script)} {SETTINGS} {shlex.quote(key)}")
    assert result.rc == 0, f"{SETTINGS} could not be parsed on the host (exit {result.rc})"  # stderr may quote it
    found = json.loads(result.stdout)
    assert found["present"], f"{SETTINGS} has no {key!r}"
    return found["value"]


def test_settings_file_is_readable_by_the_app_and_writable_by_root_only(host):
    with host.sudo():
        settings = host.file(SETTINGS)
        assert (settings.user, settings.group, settings.mode) == ("root", "bank", 0o640)
        folder = host.file("/etc/bank")
        assert (folder.user, folder.group, folder.mode) == ("root", "bank", 0o750)
        overlays = host.file("/etc/bank/bank.d")
        assert (overlays.user, overlays.group, overlays.mode) == ("root", "bank", 0o750)
        for name in host.check_output("find /etc/bank/bank.d -name '*.toml'").split():
            overlay = host.file(name)
            assert (name, overlay.user, overlay.group, overlay.mode) == (name, "root", "bank", 0o640)


def test_the_app_user_cannot_rewrite_its_settings(host):
    assert host.run(f"sudo -u bank test -r {SETTINGS}").rc == 0
    assert host.run(f"sudo -u bank test -w {SETTINGS}").rc != 0
    assert host.run("sudo -u bank test -w /etc/bank").rc != 0


def test_debug_is_off(host):
    assert setting(host, "debug") is False


def test_the_site_uses_postgresql(host):
    assert host.file(DATABASE_SETTINGS).exists, f"no {DATABASE_SETTINGS}: the site is still on step 1's SQLite"
    vendor = host.run(f"{MANAGE} shell --verbosity 0 -c %s", "from django.db import connection; print(connection.vendor)")
    said = [line.strip() for line in vendor.stderr.splitlines() if line.strip()]
    assert vendor.rc == 0, f"manage.py cannot open the site's database: {said[-1] if said else 'no output'}"
    assert vendor.stdout.strip() == "postgresql", f"the site's settings give it {vendor.stdout.strip()}, not postgresql"


def test_what_serves_the_site_started_after_its_settings_changed(host):
    """The running site uses PostgreSQL, not only the settings file: every process that answers its requests (the
    app user's processes without children: the development server, Gunicorn's workers, mod_wsgi's daemons) read its
    settings at start, so each must have started after the newest of them changed (a development server left
    running since step 1 keeps serving from SQLite)."""
    with host.sudo():  # /etc/bank is root:bank 0750
        result = host.run("python3 -c %s %s %s", STARTED_BEFORE_SETTINGS, SETTINGS_FILES, "0.05")
    assert result.rc == 0, f"could not compare the site's processes with its settings: {result.stderr.strip()[-150:]}"
    stale = json.loads(result.stdout)
    assert not stale, "started before the site's settings last changed, so still on the settings before (SQLite): " + ", ".join(
        f"{name} (pid {pid}, {seconds:.0f} s before)" for pid, name, seconds in stale)


def test_schema_is_migrated_in_the_shared_database(host):
    # Runs on every web host: each one reaches db1 with the lab's generated credentials.
    result = host.run(f"{MANAGE} migrate --check")
    said = [line.strip() for line in (result.stderr or result.stdout).splitlines() if line.strip()]
    assert result.rc == 0, f"`manage.py migrate --check` exited {result.rc}: {said[-1] if said else 'migrations not applied'}"
