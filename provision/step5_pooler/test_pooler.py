"""Step 5 checks on the web hosts: pgbouncer on 127.0.0.1 only, in transaction pooling, serving the site's pool."""

import pytest

from provision.step1_bootstrap.recipes import APP_SERVER_TIERS

TIERS = APP_SERVER_TIERS  # the web hosts, and step 6's api hosts (the same site and app server)
# `lab check`: one line per check, what to try when it fails (lab/workshop.py prints it).
HINTS = {
    "test_pgbouncer_listens_on_loopback_only": "`listen_addr = 127.0.0.1` and `listen_port = 6432` in /etc/pgbouncer/pgbouncer.ini, `systemctl enable --now pgbouncer`",
    "test_pgbouncer_pools_transactions_and_its_secrets_are_private": "`pool_mode = transaction` in /etc/pgbouncer/pgbouncer.ini; `chmod 600 /etc/pgbouncer/userlist.txt`",
    "test_the_site_uses_the_pool": "the site's database host 127.0.0.1, port 6432, no server-side cursors (/etc/bank/bank.d/pooler.toml); restart gunicorn",
}


@pytest.fixture
def pooled(lab):
    if lab.db.pooler != "pgbouncer":
        pytest.skip("this lab has no pooler ([db] pooler = \"none\")")


def test_pgbouncer_listens_on_loopback_only(host, node, pooled):
    assert host.service("pgbouncer").is_running
    assert host.socket("tcp://127.0.0.1:6432").is_listening
    assert not host.socket(f"tcp://{node.ip}:6432").is_listening
    assert not host.socket("tcp://0.0.0.0:6432").is_listening


def test_pgbouncer_pools_transactions_and_its_secrets_are_private(host, pooled):
    with host.sudo():
        ini = host.file("/etc/pgbouncer/pgbouncer.ini").content_string
        assert host.file("/etc/pgbouncer/userlist.txt").mode == 0o600
    assert "pool_mode = transaction" in ini
    assert "listen_addr = 127.0.0.1" in ini


def test_the_site_uses_the_pool(host, lab, pooled):
    # The site's own settings, loaded as Django loads them: pgbouncer's address and no server-side cursors.
    script = ("import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'bank.settings'; django.setup(); "
              "from django.conf import settings; d = settings.DATABASES['default']; "
              "from django.db import connection; connection.ensure_connection(); "
              "print(d['HOST'], d['PORT'], d.get('DISABLE_SERVER_SIDE_CURSORS'))")
    out = host.check_output(f"cd /srv/bank/current && sudo -u bank BANK_CONFIG=/etc/bank/bank.toml "
                            f"/srv/bank/venv/bin/python -c \"{script}\"")
    assert out.split() == ["127.0.0.1", "6432", "True"]
    with host.sudo("postgres"):
        pools = host.check_output("cd /tmp && psql -XtA -h /var/run/postgresql -p 6432 -U postgres pgbouncer "
                                  "-c 'SHOW POOLS'")
    bank = [line.split("|") for line in pools.splitlines() if line.startswith("bank|")]
    assert bank and bank[0][-1] == "transaction"
