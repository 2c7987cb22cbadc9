"""Step 2 checks on the web hosts: settings with per-lab secrets (0600, DEBUG off) and the schema migrated."""

TIERS = ("web",)


def test_settings_file_is_private_to_the_app_user(host):
    settings = host.file("/etc/bank/bank.toml")
    assert settings.user == "bank"
    assert settings.mode == 0o600


def test_debug_is_off(host):
    with host.sudo():
        assert "debug = false" in host.file("/etc/bank/bank.toml").content_string


def test_schema_is_migrated_in_the_shared_database(host):
    # Runs on every web host: each one reaches db1 with the lab's generated credentials.
    result = host.run(
        "cd /srv/bank/current && sudo -u bank BANK_CONFIG=/etc/bank/bank.toml /srv/bank/venv/bin/python manage.py migrate --check"
    )
    assert result.rc == 0, result.stderr
