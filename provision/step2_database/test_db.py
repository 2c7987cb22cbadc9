"""Step 2 checks on the database host: PostgreSQL 15 running, on the private network only, admitting only the hosts
its links let in."""

TIERS = ("db",)


def test_postgresql_15_installed_and_running(host):
    assert host.package("postgresql-15").is_installed
    assert host.service("postgresql@15-main").is_running
    assert host.service("postgresql").is_enabled


def test_listens_on_private_ip_and_loopback_only(host, node):
    assert host.socket(f"tcp://{node.ip}:5432").is_listening
    assert host.socket("tcp://127.0.0.1:5432").is_listening
    assert not host.socket("tcp://0.0.0.0:5432").is_listening


def test_pg_hba_admits_only_the_web_hosts(host, node, lab):
    rules = [
        line.split() for line in host.file("/etc/postgresql/15/main/pg_hba.conf").content_string.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    network_rules = [r for r in rules if r[0].startswith("host")]
    assert sorted(r[3] for r in network_rules) == sorted(f"{c.ip}/32" for c in lab.clients(node, "sql"))
    assert lab.clients(node, "sql")  # the site's hosts reach it
    assert all(r[1:3] == ["bank", "bank"] and r[4] == "scram-sha-256" for r in network_rules)
    assert host.file("/etc/postgresql/15/main/pg_hba.conf").mode == 0o640


def test_site_database_and_role_exist(host):
    with host.sudo("postgres"):
        databases = host.check_output("psql -tAc 'SELECT datname FROM pg_database'").split()
        roles = host.check_output("psql -tAc 'SELECT rolname FROM pg_roles WHERE rolcanlogin'").split()
    assert "bank" in databases
    assert "bank" in roles
