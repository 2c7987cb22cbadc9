"""Step 2 recipes: PostgreSQL with the site's database and role, admitting the hosts its links allow; migrations, sample data."""

from __future__ import annotations

from lab.recipes import Target, recipe
from lab.secrets import scram_matches, scram_verifier, sql_literal
from provision.step1_bootstrap.recipes import APP_USER, CURRENT, DATABASE, ROLE, SETTINGS, VENV

PG_VERSION = "15"
PG_ETC = f"/etc/postgresql/{PG_VERSION}/main"
SCHEMA_LOCK = "bank-schema"  # migrations and sample data, one at a time
E2E_CUSTOMERS = 2  # customer0001 and customer0002, for step 5's end-to-end checks through the balancer
REPLICATION_ROLE = "replicator"  # step 6's standby streams as this role (made on the primary by step6_standby)


def manage(command: str) -> str:
    return f"cd {CURRENT} && BANK_CONFIG={SETTINGS} {VENV}/bin/python manage.py {command}"


def psql_script(t: Target, sql: str) -> None:
    """Run SQL as postgres with the SQL on stdin: what it holds (a role's verifier) is on no command line."""
    t.run("psql -q -X -v ON_ERROR_STOP=1", user="postgres", stdin=sql)


@recipe(tiers=("db",))
def postgresql(t: Target) -> None:
    t.packages(f"postgresql-{PG_VERSION}", "postgresql-client")
    with t.owed("postgresql-restart") as earlier_change:  # a config written by a run interrupted before the restart
        restart = t.template(f"{PG_ETC}/conf.d/lab.conf", "step2_database/templates/postgresql-lab.conf.j2",
                             max_connections=t.topology.db.max_connections)
        reload = t.template(
            f"{PG_ETC}/pg_hba.conf", "step2_database/templates/pg_hba.conf.j2", 0o640, "postgres", "postgres",
            clients=t.topology.clients(t.host, "sql"), database=DATABASE, role=ROLE,
            # step 6's standby: every other db host may stream from this one (the primary now, or after a failover)
            replication_peers=[h for h in t.topology.clients(t.host, "replication") if h.name != t.host.name],
            replication_role=REPLICATION_ROLE,
        )
        t.service("postgresql", restart=restart or earlier_change, reload=reload)
    t.service(f"postgresql@{PG_VERSION}-main", restart=False)
    t.wait_for_port(t.host.ip, 5432)


@recipe(tiers=("db",))
def site_database(t: Target) -> None:
    if t.host.name != t.topology.db.primary:
        return  # a standby (step 6) is a copy of the primary: read-only, it gets the role and database from it
    password = t.secrets["db_password"]
    verifier = t.run("psql -tAc %s", f"SELECT rolpassword FROM pg_authid WHERE rolname = '{ROLE}'", user="postgres").stdout.strip()
    # The role gets a SCRAM verifier computed here (PostgreSQL stores one as it is): the password never reaches
    # the host, and the verifier travels on psql's stdin, never on a command line.
    if not verifier:
        psql_script(t, f"CREATE ROLE {ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                       f"PASSWORD {sql_literal(scram_verifier(password))};\n")
        t.changed(f"created role {ROLE}")
    elif not scram_matches(verifier, password):
        psql_script(t, f"ALTER ROLE {ROLE} PASSWORD {sql_literal(scram_verifier(password))};\n")
        t.changed(f"reset the password of role {ROLE}")
    if not t.run("psql -tAc %s", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'", user="postgres").stdout.strip():
        t.run("createdb --owner=%s %s", ROLE, DATABASE, user="postgres")
        t.changed(f"created database {DATABASE}")


@recipe(tiers=("web",), requires=("step2_database.site_database",), first_only=True)
def schema_and_sample_data(t: Target) -> None:
    """Migrations and sample data, once for the whole web tier (they share one database).

    Each is interrupt-safe in itself (a migration and its record commit in one transaction on PostgreSQL; the
    sample data loads in one transaction), but an interrupted run leaves the command going on the host: both
    hold one lock, so a re-run waits for it instead of racing it into duplicate tables or rows.
    """
    if not t.test(manage("migrate --check --noinput"), user=APP_USER):
        t.run(t.locked(SCHEMA_LOCK, manage("migrate --noinput")), user=APP_USER)
        t.changed("applied migrations")
    # Two customers: step 5's end-to-end checks prove through the balancer that neither sees or moves the other's money.
    # The demo password arrives on stdin and goes to the command through its environment (not ps, not sudo's log).
    load = "IFS= read -r BANK_DEMO_PASSWORD && export BANK_DEMO_PASSWORD && " + manage(
        f"load_sample_data --sync-demo-password --customers {E2E_CUSTOMERS}")
    loaded = t.run(t.locked(SCHEMA_LOCK, load), user=APP_USER, stdin=t.secrets["demo_password"] + "\n").stdout
    if "already" not in loaded or "created" in loaded or "updated" in loaded:
        t.changed("loaded sample data")
