"""Step 2 recipes: PostgreSQL with the site's database and role, admitting the hosts its links allow; the site's
settings switched from SQLite to it (bank.d/database.toml); migrations, sample data."""

from __future__ import annotations

from lab.recipes import RecipeError, Target, recipe
from lab.secrets import scram_matches, scram_verifier, sql_literal
from provision.step1_bootstrap.recipes import (APP_USER, DATABASE, DATABASE_OVERLAY, DEVSERVER_UNIT, OVERLAY_DIR, ROLE,
                                               SETTINGS, SITE_TIERS, schema_and_sample_data_in, write_site_overlay)

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


@recipe(tiers=SITE_TIERS)
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
    pid = t.run("systemctl show -p MainPID --value %s", DEVSERVER_UNIT, check=False).stdout.strip()
    if pid not in ("", "0") and t.run("python3 -c %s %s %s %s", STARTED_BEFORE_SETTINGS, SETTINGS_FILES, "-0.05",
                                      pid).stdout.strip() not in ("", "[]"):
        t.run("systemctl restart %s", DEVSERVER_UNIT)
        t.changed(f"restarted {DEVSERVER_UNIT} onto PostgreSQL")


# The site's settings: a process that started before one of them last changed runs on the settings before.
SETTINGS_FILES = f"{SETTINGS},{OVERLAY_DIR}/*.toml"
# Run by python3 on a web host: argv[1] the settings files (comma-separated globs), argv[2] a margin in seconds,
# argv[3:] process ids (none: every process of the app user without children of its own, what answers the site's
# requests: the development server, Gunicorn's workers, mod_wsgi's daemon processes). Prints a JSON list of
# [pid, name, seconds it started before the newest settings file changed] for each that started more than margin
# seconds before (a negative margin: could have started before; a process's start is known to 1/100 s).
STARTED_BEFORE_SETTINGS = """
import glob, json, os, pwd, sys, time
files = [f for pattern in sys.argv[1].split(',') for f in glob.glob(pattern)]
newest = max(os.stat(f).st_mtime for f in files)
margin = float(sys.argv[2])
now_boot, now = time.clock_gettime(time.CLOCK_BOOTTIME), time.time()
def stat(pid):
    with open(f'/proc/{pid}/stat') as f:
        name, rest = f.read().split(' (', 1)[1].rsplit(') ', 1)
    fields = rest.split()
    return name, int(fields[1]), now - (now_boot - int(fields[19]) / os.sysconf('SC_CLK_TCK'))
procs = {}
for pid in [p for p in os.listdir('/proc') if p.isdigit()]:
    try:
        procs[int(pid)] = (os.stat(f'/proc/{pid}').st_uid, *stat(pid))
    except (OSError, ValueError):
        pass
if sys.argv[3:]:
    chosen = [int(p) for p in sys.argv[3:] if int(p) in procs]
else:
    uid = pwd.getpwnam('""" + APP_USER + """').pw_uid
    parents = {ppid for _, _, ppid, _ in procs.values()}
    chosen = [p for p, (owner, _, _, _) in procs.items() if owner == uid and p not in parents]
print(json.dumps([[p, procs[p][1], round(newest - procs[p][3], 2)] for p in sorted(chosen)
                  if procs[p][3] < newest - margin]))
"""
