"""Step 5 recipes: pgbouncer on each web (and api) host (127.0.0.1 only, transaction pooling) and the site connecting to it.

Also the one way a step after step 3 changes the site's settings: a file of its own in /etc/bank/bank.d/ (read over
bank.toml by app/bank/config.py), then the app server restarted in a rolling window. The settings of steps 1–2 do not
know about steps 5 and 6: `lab up --step 3` must give a site that talks to PostgreSQL directly.
"""

from __future__ import annotations

from typing import Any, Mapping

from lab.recipes import Target, recipe
from lab.topology import Host, Topology
from provision.step1_bootstrap.recipes import APP_SERVER_TIERS, DATABASE, ROLE, write_site_overlay
from provision.step3_appserver.recipes import SERVER_UNITS, _serve

PGBOUNCER_PORT = 6432
PGBOUNCER_INI = "/etc/pgbouncer/pgbouncer.ini"
REPLICA_ALIAS = f"{DATABASE}_replica"  # the standby's reads, as pgbouncer names them
ADMIN_NO_PASSWORD = "peer-only-never-a-password"
ADMIN = "psql -X -q -h /var/run/postgresql -p %s -U postgres pgbouncer -c %s"  # pgbouncer's admin console (peer)


def site_overlay(t: Target, name: str, values: Mapping[str, Any]) -> bool:
    """A step's part of the site's settings after step 3 (none: removed); a change restarts the app server that
    serves, host by host (step 1's write_site_overlay writes the file)."""
    with t.owed(f"site-overlay-{name}") as earlier_change:
        changed = write_site_overlay(t, name, values)
        if (changed or earlier_change) and t.test("systemctl is-active --quiet %s", SERVER_UNITS[t.topology.app_server]):
            _serve(t, SERVER_UNITS[t.topology.app_server], reconfigured=True)
    return changed


def replica_target(topology: Topology) -> Host:
    """Where the site's read-only report goes: the first standby when replica reads are on, else the primary."""
    if topology.db.replica_reads and topology.db_standbys:
        return topology.db_standbys[0]
    return topology.db_primary


def write_pgbouncer_config(t: Target, primary: Host, replica: Host) -> bool:
    """pgbouncer's databases (the primary, the replica's reads) and settings; True when the file changed."""
    tuning = t.topology.appserver
    return t.template(
        PGBOUNCER_INI, "step5_pooler/templates/pgbouncer.ini.j2", 0o640, "postgres", "postgres",
        database=DATABASE, replica_alias=REPLICA_ALIAS, primary_ip=primary.ip, replica_ip=replica.ip,
        db_port=t.topology.port("sql", client=t.host), port=PGBOUNCER_PORT, pool_size=t.topology.db.pool_size,
        # every thread of every process may hold a client connection (Django's persistent connections), twice with
        # the replica's alias; pgbouncer queues them onto pool_size server connections
        max_client_conn=2 * tuning.workers * tuning.threads + 20,
    )


def pgbouncer_admin(t: Target, command: str) -> None:
    """One command on pgbouncer's admin console (PAUSE, RESUME, RELOAD), as postgres over the local socket."""
    t.run(ADMIN, PGBOUNCER_PORT, command, user="postgres")


POOLED_TIERS = APP_SERVER_TIERS  # the hosts whose app server reaches the database: each runs its own pgbouncer


@recipe(tiers=POOLED_TIERS)
def pgbouncer(t: Target) -> None:
    """pgbouncer on 127.0.0.1:6432 when the lab's [db] pooler is pgbouncer; stopped and the site direct when not."""
    if t.topology.db.pooler != "pgbouncer":
        if t.test("systemctl is-enabled --quiet pgbouncer"):
            site_overlay(t, "pooler", {})  # the site goes direct first, then its pooler goes
            t.run("systemctl disable --now --quiet pgbouncer")
            t.changed("stopped and disabled pgbouncer")
        else:
            site_overlay(t, "pooler", {})
        return
    t.packages("pgbouncer", "postgresql-client")  # psql: pgbouncer's admin console (PAUSE/RESUME at a failover)
    with t.owed("pgbouncer-restart") as earlier_change:
        changed = write_pgbouncer_config(t, t.topology.db_primary, replica_target(t.topology))
        changed |= t.template("/etc/pgbouncer/hba.conf", "step5_pooler/templates/hba.conf.j2", 0o640, "postgres",
                              "postgres", database=DATABASE, replica_alias=REPLICA_ALIAS, role=ROLE)
        # pgbouncer logs in to PostgreSQL with the role's password: the file is pgbouncer's own (0600, written
        # through stdin by t.file, never on a command line).
        # postgres: the admin console's user, which pgbouncer must know; its hba admits it by peer on the socket
        # only, so the password here is never checked (and opens nothing).
        changed |= t.file("/etc/pgbouncer/userlist.txt",
                          f'"{ROLE}" "{t.secrets["db_password"]}"\n"postgres" "{ADMIN_NO_PASSWORD}"\n', 0o600,
                          "postgres", "postgres")
        # A reload keeps every client connection (RELOAD re-reads the file; the pool moves to a new host by itself).
        t.service("pgbouncer", reload=changed or earlier_change)
    t.wait_for_port("127.0.0.1", PGBOUNCER_PORT)
    site_overlay(t, "pooler", {
        "db_host": "127.0.0.1", "db_port": PGBOUNCER_PORT,
        # behind a transaction pooler: no server-side cursors (a cursor would outlive its transaction's connection)
        "db_pooler": True,
    })
