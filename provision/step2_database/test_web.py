"""Step 2 checks on the web hosts: settings with per-lab secrets (root:bank 0640, DEBUG off) and the schema migrated.

The settings file holds the database password and SECRET_KEY: checks parse it on the host and bring back only the
key they look at, so a failing check can never print the file (to the terminal or the JUnit XML)."""

import json
import shlex

TIERS = ("web",)
SETTINGS = "/etc/bank/bank.toml"

# `lab check`: one line per check, what to try when it fails (lab/workshop.py prints it).
HINTS = {
    "test_settings_file_is_readable_by_the_app_and_writable_by_root_only": "`chown root:bank /etc/bank /etc/bank/bank.toml && chmod 750 /etc/bank && chmod 640 /etc/bank/bank.toml`",
    "test_the_app_user_cannot_rewrite_its_settings": "`sudo -u bank test -w /etc/bank/bank.toml` must fail: root owns the file (0640) and /etc/bank (0750), bank is its group",
    "test_debug_is_off": "set debug = false in /etc/bank/bank.toml",
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


def test_the_app_user_cannot_rewrite_its_settings(host):
    assert host.run(f"sudo -u bank test -r {SETTINGS}").rc == 0
    assert host.run(f"sudo -u bank test -w {SETTINGS}").rc != 0
    assert host.run("sudo -u bank test -w /etc/bank").rc != 0


def test_debug_is_off(host):
    assert setting(host, "debug") is False


def test_schema_is_migrated_in_the_shared_database(host):
    # Runs on every web host: each one reaches db1 with the lab's generated credentials.
    result = host.run(
        "cd /srv/bank/current && sudo -u bank BANK_CONFIG=/etc/bank/bank.toml /srv/bank/venv/bin/python manage.py migrate --check"
    )
    assert result.rc == 0, result.stderr
