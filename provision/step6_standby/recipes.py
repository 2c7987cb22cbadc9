"""Step 6 recipes: every db host but the primary a hot standby (streaming replication through a slot, asynchronous,
readable), and the site's read-only report sent to it when [db] replica_reads is on."""

from __future__ import annotations

from lab.recipes import RecipeError, Target, recipe
from lab.secrets import scram_matches, scram_verifier, sql_literal
from provision.step1_bootstrap.recipes import APP_SERVER_TIERS, DATABASE
from provision.step2_database.recipes import PG_VERSION, REPLICATION_ROLE, psql_script
from provision.step5_pooler.recipes import PGBOUNCER_PORT, REPLICA_ALIAS, replica_target, site_overlay

DATA_DIR = f"/var/lib/postgresql/{PG_VERSION}/main"
CLUSTER_UNIT = f"postgresql@{PG_VERSION}-main"
PGPASS = "/var/lib/postgresql/.pgpass"
STREAMING_WAIT_S = 120


def slot_name(host_name: str) -> str:
    return host_name.replace("-", "_")  # a slot name is lowercase letters, digits and underscores


def sql(t: Target, query: str) -> str:
    return t.run("psql -XtAc %s", query, user="postgres").stdout.strip()


@recipe(tiers=("db",), requires=("step2_database.postgresql",))
def replication_source(t: Target) -> None:
    """On the primary: the replication role and one physical slot per standby (a slot of a host gone is dropped:
    it would keep WAL for ever)."""
    if t.host.name != t.topology.db.primary:
        return
    password = t.secrets["replication_password"]
    verifier = sql(t, f"SELECT rolpassword FROM pg_authid WHERE rolname = '{REPLICATION_ROLE}'")
    # As step 2's role: a SCRAM verifier made on the machine, on psql's stdin (no password on any command line).
    if not verifier:
        psql_script(t, f"CREATE ROLE {REPLICATION_ROLE} REPLICATION LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                       f"PASSWORD {sql_literal(scram_verifier(password))};\n")
        t.changed(f"created role {REPLICATION_ROLE}")
    elif not scram_matches(verifier, password):
        psql_script(t, f"ALTER ROLE {REPLICATION_ROLE} PASSWORD {sql_literal(scram_verifier(password))};\n")
        t.changed(f"reset the password of role {REPLICATION_ROLE}")
    wanted = {slot_name(h.name) for h in t.topology.db_standbys}
    have = set(sql(t, "SELECT slot_name FROM pg_replication_slots").split())
    for slot in sorted(wanted - have):
        sql(t, f"SELECT pg_create_physical_replication_slot('{slot}')")
        t.changed(f"created replication slot {slot}")
    for slot in sorted(have - wanted):
        sql(t, f"SELECT pg_drop_replication_slot('{slot}')")
        t.changed(f"dropped replication slot {slot}")


def streams_from(t: Target, primary_ip: str) -> bool:
    """Whether this cluster runs in recovery with the primary as its source (not: a fenced old primary)."""
    if not t.test("systemctl is-active --quiet %s", CLUSTER_UNIT):
        return False
    if sql(t, "SELECT pg_is_in_recovery()") != "t":
        return False
    return f"host={primary_ip} " in sql(t, "SHOW primary_conninfo") + " "


@recipe(tiers=("db",), requires=("step6_standby.replication_source",))
def standby(t: Target) -> None:
    """A standby copied from the primary (pg_basebackup -R with its slot) unless it already streams from it: the
    first time, and after `lab failover db` on the old primary (fenced: in recovery, no source)."""
    if t.host.name == t.topology.db.primary:
        return
    primary = t.topology.db_primary
    # The password reaches pg_basebackup and the standby's walreceiver through a 0600 passfile, never a command line.
    t.file(PGPASS, f"{primary.ip}:5432:replication:{REPLICATION_ROLE}:{t.secrets['replication_password']}\n",
           0o600, "postgres", "postgres")
    if streams_from(t, primary.ip):
        return
    copy = f"{DATA_DIR}.lab-new"
    t.run(f"systemctl stop {CLUSTER_UNIT}")
    t.run(t.locked(DATA_DIR, (
        f"rm -rf {copy} && runuser -u postgres -- pg_basebackup -w -h {primary.ip} -U {REPLICATION_ROLE} "
        f"-D {copy} -R -S {slot_name(t.host.name)} -X stream --checkpoint=fast "
        f"&& rm -rf {DATA_DIR}.lab-old && mv {DATA_DIR} {DATA_DIR}.lab-old && mv {copy} {DATA_DIR} "
        f"&& rm -rf {DATA_DIR}.lab-old"
    )))
    t.run(f"systemctl start {CLUSTER_UNIT}")
    t.changed(f"made {t.host.name} a hot standby of {primary.name} (pg_basebackup, slot {slot_name(t.host.name)})")
    wait = (f"for i in $(seq {STREAMING_WAIT_S}); do s=$(runuser -u postgres -- psql -XtAc "
            "\"SELECT status FROM pg_stat_wal_receiver\"); [ \"$s\" = streaming ] && exit 0; sleep 1; done; exit 1")
    if not t.test("bash -c %s", wait):
        raise RecipeError(f"{t.host.name} does not stream from {primary.name} after {STREAMING_WAIT_S} s")


@recipe(tiers=APP_SERVER_TIERS, after=("step6_standby.standby",))
def site_replica(t: Target) -> None:
    """The site's `replica` database (the report's reads): through pgbouncer when it is on, else the standby itself."""
    if not (t.topology.db.replica_reads and t.topology.db_standbys):
        site_overlay(t, "replica", {})
        return
    if t.topology.db.pooler == "pgbouncer":
        values = {"replica_host": "127.0.0.1", "replica_port": PGBOUNCER_PORT, "replica_name": REPLICA_ALIAS}
    else:
        values = {"replica_host": replica_target(t.topology).ip, "replica_port": t.topology.port("sql", client=t.host),
                  "replica_name": DATABASE}
    site_overlay(t, "replica", values)
