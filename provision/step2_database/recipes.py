"""Step 2 recipes: PostgreSQL with the site's database and role, admitting the hosts its links allow; the site's
settings switched from SQLite to it (bank.d/database.toml); migrations, sample data."""

from __future__ import annotations

from lab.recipes import RecipeError, Target, recipe
from lab.secrets import scram_matches, scram_verifier, sql_literal
from provision.step1_bootstrap.recipes import (DATABASE, DATABASE_OVERLAY, DEVSERVER_UNIT, OVERLAY_DIR, ROLE,
                                               schema_and_sample_data_in, write_site_overlay)

PG_VERSION = "15"
PG_ETC = f"/etc/postgresql/{PG_VERSION}/main"
REPLICATION_ROLE = "replicator"  # step 6's standby streams as this role (made on the primary by step6_standby)


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


@recipe(tiers=("web",))
def database_settings(t: Target) -> None:
    """The site's database: PostgreSQL on the primary its links lead to, with this lab's role and password
    (step 1's settings say SQLite). An app server this converge starts later restarts on the "app-config" event; a
    running development server once the schema and data are there (schema_and_sample_data)."""
    databases = t.topology.serving("sql", client=t.host)
    if not databases:
        raise RecipeError(f"no host of this lab serves the site's database (link 'sql') to {t.host.name}")
    write_site_overlay(t, DATABASE_OVERLAY, {
        "db_engine": "postgresql", "db_name": DATABASE, "db_user": ROLE, "db_password": t.secrets["db_password"],
        # the primary (step 6 may add a standby; `lab failover db` swaps them); step 5's pooler overrides both
        "db_host": t.topology.db_primary.ip if t.topology.db_primary in databases else databases[0].ip,
        "db_port": t.topology.port("sql", client=t.host),
    })


@recipe(tiers=("web",), requires=("step2_database.site_database", "step2_database.database_settings"), first_only=True)
def schema_and_sample_data(t: Target) -> None:
    """Migrations and sample data in PostgreSQL, once for the whole web tier (they share one database); then the
    workshop's development server (steps 1–2), if it runs, restarted onto them."""
    schema_and_sample_data_in(t, "PostgreSQL")
    # Started before its settings last changed: still on SQLite (or the primary before a failover). Asked of the
    # host, not of this run's events, so a run interrupted between the two still restarts it.
    if t.test(STARTED_BEFORE_SETTINGS, DEVSERVER_UNIT, f"{OVERLAY_DIR}/{DATABASE_OVERLAY}.toml"):
        t.run("systemctl restart %s", DEVSERVER_UNIT)
        t.changed(f"restarted {DEVSERVER_UNIT} onto PostgreSQL")


# Exits 0 when unit $1 runs and file $2 changed after its main process started.
STARTED_BEFORE_SETTINGS = ('sh -c \'pid=$(systemctl show -p MainPID --value "$1"); [ "${pid:-0}" != 0 ] && '
                           '[ $(( $(date +%%s) - $(stat -c %%Y "$2") )) -lt $(ps -o etimes= -p "$pid") ]\' - %s %s')
