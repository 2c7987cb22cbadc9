"""Step 6 checks on the db hosts: the primary streams to every standby through its slot, with the replay lag under a
bound; a standby is in recovery and refuses writes."""

import pytest

TIERS = ("db",)
# `lab check`: one line per check, what to try when it fails (lab/workshop.py prints it).
HINTS = {
    "test_the_primary_streams_to_every_standby_within_the_lag_bound": "on the primary: `SELECT * FROM pg_stat_replication` and pg_replication_slots; each standby streams through its slot",
    "test_a_standby_is_in_recovery_and_read_only": "a standby is a copy made with `pg_basebackup -R -S <slot>` (standby.signal); the primary must not have one",
}
MAX_LAG_BYTES = 16 * 1024 * 1024  # a standby at most one WAL segment behind once the lab is idle (asynchronous)


def sql(host, query, database="postgres"):
    with host.sudo("postgres"):
        return host.check_output(f"cd /tmp && psql -XtA -d {database} -c \"{query}\"")


@pytest.fixture
def standbys(lab):
    if not lab.db_standbys:
        pytest.skip("this lab has no standby (db count 1)")
    return lab.db_standbys


def test_the_primary_streams_to_every_standby_within_the_lag_bound(host, node, lab, standbys):
    if node.name != lab.db.primary:
        pytest.skip(f"{node.name} is a standby")
    rows = [line.split("|") for line in sql(host, "SELECT client_addr, state, sync_state, "
            "pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) FROM pg_stat_replication").splitlines()]
    streaming = {r[0]: r for r in rows if r[1] == "streaming"}
    for standby in standbys:
        assert standby.ip in streaming, f"{standby.name} does not stream from {node.name}: {rows}"
        row = streaming[standby.ip]
        assert row[2] == "async"
        assert int(float(row[3] or 0)) < MAX_LAG_BYTES, f"{standby.name} replays {row[3]} bytes behind"
    slots = sql(host, "SELECT slot_name FROM pg_replication_slots WHERE active").split()
    assert sorted(slots) == sorted(s.name.replace("-", "_") for s in standbys)


def test_a_standby_is_in_recovery_and_read_only(host, node, lab, standbys):
    if node.name == lab.db.primary:
        assert sql(host, "SELECT pg_is_in_recovery()") == "f"
        return
    assert sql(host, "SELECT pg_is_in_recovery()") == "t"
    assert sql(host, "SELECT count(*) FROM accounts_account", "bank").isdigit()  # readable
    with host.sudo("postgres"):
        write = host.run("cd /tmp && psql -XtA -d bank -c 'CREATE TABLE lab_write_probe (id int)'")
    assert write.rc != 0 and "read-only transaction" in write.stderr
