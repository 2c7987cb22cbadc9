"""Step 2 recipes: PostgreSQL with the site's database and role, admitting the hosts its links allow; migrations, sample data."""

from __future__ import annotations

import base64
import hashlib
import hmac

from lab.recipes import Target, recipe
from provision.step1_bootstrap.recipes import APP_USER, CURRENT, DATABASE, ROLE, SETTINGS, VENV

PG_VERSION = "15"
PG_ETC = f"/etc/postgresql/{PG_VERSION}/main"
SCHEMA_LOCK = "bank-schema"  # migrations and sample data, one at a time


def manage(command: str) -> str:
    return f"cd {CURRENT} && BANK_CONFIG={SETTINGS} {VENV}/bin/python manage.py {command}"


@recipe(tiers=("db",))
def postgresql(t: Target) -> None:
    t.packages(f"postgresql-{PG_VERSION}", "postgresql-client")
    with t.owed("postgresql-restart") as earlier_change:  # a config written by a run interrupted before the restart
        restart = t.template(f"{PG_ETC}/conf.d/lab.conf", "step2_database/templates/postgresql-lab.conf.j2")
        reload = t.template(
            f"{PG_ETC}/pg_hba.conf", "step2_database/templates/pg_hba.conf.j2", 0o640, "postgres", "postgres",
            clients=t.topology.clients(t.host, "sql"), database=DATABASE, role=ROLE,
        )
        t.service("postgresql", restart=restart or earlier_change, reload=reload)
    t.service(f"postgresql@{PG_VERSION}-main", restart=False)
    t.wait_for_port(t.host.ip, 5432)


def scram_matches(verifier: str, password: str) -> bool:
    """Whether a pg_authid SCRAM-SHA-256 verifier was made from this password (so the role is left alone)."""
    try:
        method, params, keys = verifier.split("$")
        iterations_text, salt_text = params.split(":")
        stored_key = keys.split(":")[0]
        iterations, salt = int(iterations_text), base64.b64decode(salt_text, validate=True)
    except ValueError:  # binascii.Error is a ValueError too: anything malformed is "does not match"
        return False
    if method != "SCRAM-SHA-256" or iterations < 1:
        return False
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return hmac.compare_digest(base64.b64encode(hashlib.sha256(client_key).digest()).decode(), stored_key)


@recipe(tiers=("db",))
def site_database(t: Target) -> None:
    password = t.secrets["db_password"]
    verifier = t.run("psql -tAc %s", f"SELECT rolpassword FROM pg_authid WHERE rolname = '{ROLE}'", user="postgres").stdout.strip()
    if not verifier:
        t.run("psql -qc %s", f"CREATE ROLE {ROLE} LOGIN PASSWORD '{password}'", user="postgres")
        t.changed(f"created role {ROLE}")
    elif not scram_matches(verifier, password):
        t.run("psql -qc %s", f"ALTER ROLE {ROLE} PASSWORD '{password}'", user="postgres")
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
    load = f"export BANK_DEMO_PASSWORD={t.secrets['demo_password']}; " + manage("load_sample_data --sync-demo-password")
    loaded = t.run(t.locked(SCHEMA_LOCK, load), user=APP_USER).stdout
    if "already" not in loaded or "created" in loaded or "updated" in loaded:
        t.changed("loaded sample data")
