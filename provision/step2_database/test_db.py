"""Step 2 checks on the database host: PostgreSQL 15 running, on the private network only, admitting only the hosts
its links let in; the site's role owns its database and nothing more."""

from provision.step1_bootstrap.recipes import DATABASE, ROLE

TIERS = ("db",)
# `lab check`: one line per check, what to try when it fails (lab/workshop.py prints it).
HINTS = {
    "test_postgresql_15_installed_and_running": "install the package postgresql-15, then `systemctl enable --now postgresql`",
    "test_listens_on_private_ip_and_loopback_only": "set listen_addresses = 'localhost,<db1's IP>' in /etc/postgresql/15/main/conf.d/, restart postgresql",
    "test_pg_hba_admits_only_the_sql_links_clients": "pg_hba.conf: only `local` lines and one `host bank bank <IP>/32 scram-sha-256` per host the sql link names: web, api, q (mode 0640), then reload",
    "test_site_database_and_role_exist": "as postgres: `CREATE ROLE bank LOGIN PASSWORD '...'` through psql's stdin, `createdb --owner=bank bank` (docs/steps/2-database.md)",
    "test_site_role_has_no_administrative_powers": "as postgres: `ALTER ROLE bank NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS`; bank owns only db bank, in no role",
}


def test_postgresql_15_installed_and_running(host):
    assert host.package("postgresql-15").is_installed
    assert host.service("postgresql@15-main").is_running
    assert host.service("postgresql").is_enabled


def test_listens_on_private_ip_and_loopback_only(host, node):
    assert host.socket(f"tcp://{node.ip}:5432").is_listening, f"PostgreSQL does not listen on {node.ip}:5432"
    assert host.socket("tcp://127.0.0.1:5432").is_listening, "PostgreSQL does not listen on localhost (127.0.0.1:5432)"
    assert not host.socket("tcp://0.0.0.0:5432").is_listening, "PostgreSQL listens on every address (0.0.0.0:5432)"


def test_pg_hba_admits_only_the_sql_links_clients(host, node, lab):
    rules = [
        line.split("#", 1)[0].split() for line in host.file("/etc/postgresql/15/main/pg_hba.conf").content_string.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    network_rules = [r for r in rules if r[0].startswith("host") and r[1:2] != ["replication"]]  # step 6: test_standby
    clients = lab.clients(node, "sql")
    assert clients, f"no host of this lab reaches {node.name}'s database (no link 'sql')"
    # host, hostssl...: any TYPE of network line; DATABASE USER ADDRESS METHOD as the site's own must be
    wanted = {f"bank bank {c.ip}/32 scram-sha-256": f"host bank bank {c.ip}/32 scram-sha-256" for c in clients}
    found = {" ".join(r[1:5]): " ".join(r) for r in network_rules}
    unexpected = [line for key, line in found.items() if key not in wanted]
    missing = [line for key, line in wanted.items() if key not in found]
    assert not unexpected and not missing, "; ".join(
        ([f"remove {', '.join(repr(r) for r in unexpected)}"] if unexpected else [])
        + ([f"missing {', '.join(repr(r) for r in missing)}"] if missing else []))
    mode = host.file("/etc/postgresql/15/main/pg_hba.conf").mode
    assert mode == 0o640, f"pg_hba.conf has mode {mode:o}, not 640"


def test_site_database_and_role_exist(host):
    with host.sudo("postgres"):
        databases = host.check_output("psql -tAc 'SELECT datname FROM pg_database'").split()
        roles = host.check_output("psql -tAc 'SELECT rolname FROM pg_roles WHERE rolcanlogin'").split()
    assert "bank" in databases
    assert "bank" in roles


def test_site_role_has_no_administrative_powers(host):
    """The site's role can be stolen with the site: it must not be a superuser, make roles or databases, replicate
    or bypass row security. It owns its own database (migrations need that) and no other."""
    with host.sudo("postgres"):
        powers = host.check_output(
            "psql -tAc %s", "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls "
            f"FROM pg_roles WHERE rolname = '{ROLE}'")
        owned = host.check_output(
            "psql -tAc %s", f"SELECT datname FROM pg_database WHERE pg_get_userbyid(datdba) = '{ROLE}'").split()
        member_of = host.check_output(
            "psql -tAc %s", "SELECT b.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member "
            f"JOIN pg_roles b ON b.oid = m.roleid WHERE r.rolname = '{ROLE}'").split()
    assert powers == "f|f|f|f|f", f"role {ROLE} (super, createrole, createdb, replication, bypassrls): {powers}"
    assert owned == [DATABASE]
    assert not member_of, f"role {ROLE} inherits from {member_of}"
