"""Unit tests for the [db] settings: pooler per preset and flag, replica reads, the connection budget against
max_connections (refused with the topology exit code, naming the numbers), the tuning ladder's steps."""
from __future__ import annotations

import pytest

from lab.bench.tuning import ladder
from lab.errors import TopologyError, UsageError
from lab.topology import Overrides, Topology, connection_budget, resolve


def linux(file_data=None, environ=None, overrides=Overrides()) -> Topology:
    return resolve(file_data or {}, environ or {}, overrides, platform="linux")


def test_the_pooler_comes_with_the_presets_that_teach_step_5():
    assert linux().db.pooler == "none"
    assert linux(overrides=Overrides(preset="workshop")).db.pooler == "pgbouncer"
    tuned = linux(overrides=Overrides(preset="tuned"))
    assert [h.name for h in tuned.hosts] == ["lb1", "web1", "web2", "db1", "db2", "cache1", "cache2"]
    assert (tuned.db.pooler, tuned.db.replica_reads, tuned.db.primary) == ("pgbouncer", True, "db1")
    assert [h.name for h in tuned.db_standbys] == ["db2"]


def test_pooler_from_file_then_environment_then_flag():
    assert linux({"db": {"pooler": "pgbouncer"}}).db.pooler == "pgbouncer"
    assert linux({"db": {"pooler": "pgbouncer"}}, {"LAB_POOLER": "none"}).db.pooler == "none"
    assert linux(environ={"LAB_POOLER": "none"}, overrides=Overrides(pooler="pgbouncer")).db.pooler == "pgbouncer"
    with pytest.raises(TopologyError, match=r"^--pooler must be one of none, pgbouncer \(got 'pgpool'\)"):
        linux(overrides=Overrides(pooler="pgpool"))


def test_the_pooler_is_remembered_like_the_other_flags():
    chosen = Overrides(pooler="pgbouncer", replica_reads=True)
    assert chosen.choices() == {"pooler": "pgbouncer", "replica_reads": True}
    assert Overrides.from_choices(chosen.choices()) == chosen


def test_replica_reads_need_a_standby():
    with pytest.raises(TopologyError, match=r"db\.replica_reads needs a standby to read from: 2 db hosts \(got 1\)"):
        linux({"db": {"replica_reads": True}})
    assert linux(overrides=Overrides(counts={"db": 2})).db.replica_reads
    assert not linux({"db": {"replica_reads": False}}, overrides=Overrides(counts={"db": 2})).db.replica_reads


def test_a_budget_over_max_connections_is_refused_naming_the_numbers():
    file_data = {"appserver": {"workers": 4, "threads": 4}, "lab": {"app_server": "mod_wsgi"}}
    with pytest.raises(TopologyError) as caught:
        linux(file_data, overrides=Overrides(web=9))
    assert str(caught.value).startswith(
        "connection budget: 9 web hosts × 4 processes × 4 threads + 10 reserved = 154 > db max_connections 100")
    assert caught.value.exit_code == 3
    # the pooler's pools are what reach PostgreSQL: 9 × 10 + 10 fits
    assert linux({**file_data, "db": {"pooler": "pgbouncer"}}, overrides=Overrides(web=9)).count("web") == 9
    with pytest.raises(TopologyError, match=r"9 web hosts × pgbouncer pool_size 20 \+ 10 reserved = 190 > "
                                            r"db max_connections 100") as pooled:
        linux({**file_data, "db": {"pooler": "pgbouncer", "pool_size": 20}}, overrides=Overrides(web=9))
    # the advice names what counts: behind pgbouncer its pool, not the app servers' processes and threads
    assert str(pooled.value).endswith("; lower [db] pool_size or the web count, or raise [db] max_connections")
    assert str(caught.value).endswith('; lower [appserver] workers/threads or the web count, or set [db] pooler = '
                                      '"pgbouncer", or raise [db] max_connections')
    assert linux({**file_data, "db": {"max_connections": 200}}, overrides=Overrides(web=9)).db.max_connections == 200


def test_every_default_lab_fits_its_budget():
    for app_server in ("gunicorn", "mod_wsgi"):
        topology = linux({"lab": {"app_server": app_server}}, overrides=Overrides(web=9))
        assert connection_budget(9, topology.appserver, topology.db)[0] <= topology.db.max_connections


def test_the_primary_must_be_a_db_host():
    assert linux(overrides=Overrides(counts={"db": 2}, db_primary="db2")).db_primary.name == "db2"
    with pytest.raises(TopologyError, match="the primary database db2") as caught:
        linux(overrides=Overrides(db_primary="db2"))
    # --forget keeps the primary (it is what a failover made true): the way back is another failover
    assert str(caught.value).endswith("`lab up --db=2` keeps it, or `lab failover db` makes db1 the primary again first")


def test_a_cache_count_above_its_maximum_is_refused():
    with pytest.raises(TopologyError, match=r"^--cache must be from 0 to 4 \(got 5\)") as caught:
        linux(overrides=Overrides(counts={"cache": 5}))
    assert caught.value.exit_code == 3


def test_the_tuning_ladder_adds_one_change_at_a_time():
    steps = dict(ladder(["baseline", "pgbouncer", "memcached", "replica"], Overrides(web=2)))
    topologies = {name: linux(overrides=overrides) for name, overrides in steps.items()}
    described = {name: (t.db.pooler, t.count("cache"), t.count("db"), t.db.replica_reads) for name, t in topologies.items()}
    assert described == {
        "baseline": ("none", 0, 1, False),
        "pgbouncer": ("pgbouncer", 0, 1, False),
        "memcached": ("pgbouncer", 2, 1, False),
        "replica": ("pgbouncer", 2, 2, True),
    }
    assert all(t.count("web") == 2 for t in topologies.values())


def test_an_unknown_tuning_step_is_refused_like_an_unknown_server_and_a_step_out_of_order_as_usage():
    with pytest.raises(TopologyError, match=r"^unknown tuning step 'fast'; the ladder is baseline, pgbouncer") as caught:
        ladder(["baseline", "fast"], Overrides())
    assert caught.value.exit_code == 3
    with pytest.raises(UsageError, match="in its order") as caught:
        ladder(["memcached", "pgbouncer"], Overrides())
    assert caught.value.exit_code == 2


def test_forget_keeps_the_primary_a_failover_made(tmp_path, monkeypatch):
    from lab.lifecycle import Project, plan_up

    for key in [k for k in __import__("os").environ if k.startswith("LAB_")]:
        monkeypatch.delenv(key)
    project = Project.here(tmp_path, environ={})
    project.labdir.ensure()
    made = linux(overrides=Overrides(counts={"db": 2}, db_primary="db2"))
    choices = {"counts.db": 2, "db_primary": "db2", "web": 2}
    project.labdir.write(dict(project.labdir.new_state(made), status="up", choices=choices))
    state = project.labdir.read()
    # --forget drops the flags (web, db count: lab.toml decides again) but not which host is the primary; with db
    # back to 1 host that primary is gone, and lab says so instead of making db1 a second primary
    with pytest.raises(TopologyError, match="the primary database db2"):
        plan_up(project, Overrides(), state, forget=True)
    kept = plan_up(project, Overrides(counts={"db": 2}), state, forget=True)
    assert kept.topology.db.primary == "db2" and kept.choices["db_primary"] == "db2"
