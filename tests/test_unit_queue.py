"""Unit tests for the queue tier (provision/step6_queue): its registration, the openings its links give (Redis from
web and q hosts only, PostgreSQL to the workers), what `lab status` shows of it, what `lab up` says of it, and a
failover behind pgbouncer repointing its workers."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from lab import cli, failover
from lab.recipes import RecipeError
from lab.services import services_of
from lab.stack import current
from lab.topology import Overrides, resolve
from provision.step1_bootstrap.recipes import SITE_TIERS
from provision.step2_database import recipes as step2
from provision.step6_queue import recipes as step6
from provision.step6_queue import REDIS_PORT
from provision.step6_queue.recipes import broker

NO_QUEUE = resolve({}, {}, Overrides(web=2), platform="linux")
TWO_QUEUES = resolve({"tiers": {"q": {"count": 2}}}, {}, Overrides(web=2), platform="linux")


def sources(topology, host_name, port):
    host = topology.host(host_name)
    return {source for opening in topology.inbound(host, "192.168.56.1") if opening.port == port
            for source in opening.sources}


def test_the_q_tier_is_optional_small_and_in_the_full_preset():
    spec = current().tiers["q"]
    assert (spec.ip_offset, spec.default_count, spec.min_count, spec.max_count) == (60, 0, 0, 4)
    assert spec.memory_mb <= 512
    assert current().preset_counts("full")["q"] == 2
    assert NO_QUEUE.tier("q") == ()
    assert [(h.name, h.ip) for h in TWO_QUEUES.tier("q")] == [("q1", "192.168.56.61"), ("q2", "192.168.56.62")]
    assert [h.name for h in resolve({}, {"LAB_Q": "1"}, platform="linux").tier("q")] == ["q1"]


def test_redis_is_open_to_web_and_q_hosts_only_and_the_workers_reach_the_database():
    web = {h.ip for h in TWO_QUEUES.tier("web")}
    assert sources(TWO_QUEUES, "q1", REDIS_PORT) == web | {TWO_QUEUES.host("q2").ip}
    assert sources(TWO_QUEUES, "q2", REDIS_PORT) == web | {TWO_QUEUES.host("q1").ip}
    assert TWO_QUEUES.host("lb1").ip not in sources(TWO_QUEUES, "q1", REDIS_PORT)
    assert not sources(TWO_QUEUES, "q1", 5432) and not sources(TWO_QUEUES, "web1", REDIS_PORT)
    # pg_hba and db1's firewall follow the q → db link
    assert {h.name for h in TWO_QUEUES.clients(TWO_QUEUES.host("db1"), "sql")} == {"web1", "web2", "q1", "q2"}
    assert {TWO_QUEUES.host("q1").ip, TWO_QUEUES.host("q2").ip} <= sources(TWO_QUEUES, "db1", 5432)
    assert NO_QUEUE.inbound(NO_QUEUE.host("db1"), None)  # no q host: the link opens nothing more
    assert {h.name for h in NO_QUEUE.clients(NO_QUEUE.host("db1"), "sql")} == {"web1", "web2"}


def test_every_client_of_the_queue_is_sent_to_q1():
    for name in ("web1", "web2", "q1", "q2"):
        assert broker(TWO_QUEUES, TWO_QUEUES.host(name)).name == "q1"
    assert broker(NO_QUEUE, NO_QUEUE.host("web1")) is None
    assert set(SITE_TIERS) == {"web", "api", "q"}  # the site's code, venv and settings on the workers too


def test_status_shows_the_worker_on_every_q_host_and_redis_on_q1_only():
    assert services_of(TWO_QUEUES, "q", "q1") == ("bank-worker", "redis-server")
    assert services_of(TWO_QUEUES, "q", "q2") == ("bank-worker",)
    assert services_of(TWO_QUEUES, "q") == ("bank-worker",)


def test_lab_says_where_the_tasks_run():
    assert "queue: no q host: the site's tasks run in the request (Celery always-eager)" in NO_QUEUE.describe_data_tiers()
    assert "queue: Redis on q1, Celery workers on q1, q2" in TWO_QUEUES.describe_data_tiers()


def test_the_q_flag_gives_the_count_of_the_q_tier(monkeypatch, tmp_path: Path, recorded_up):
    seen = recorded_up
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LAB_Q", raising=False)
    result = CliRunner().invoke(cli.cli, ["up", "--q", "2"])
    assert result.exit_code == 0, result.output
    assert [h.name for h in seen[0].tier("q")] == ["q1", "q2"]
    assert CliRunner().invoke(cli.cli, ["up", "--q", "5"]).exit_code != 0  # at most 4: refused, one line


def test_a_failover_behind_pgbouncer_repoints_the_queue_workers(monkeypatch):
    pooled = resolve({"tiers": {"q": {"count": 2}, "db": {"count": 2}}, "db": {"pooler": "pgbouncer"}}, {},
                     platform="linux")
    promoted = replace(pooled, db=replace(pooled.db, primary="db2"))
    done: list[tuple[str, str, str]] = []
    monkeypatch.setattr(step2, "database_settings", lambda t: done.append(("settings", t.name, t.topology.db.primary)))
    monkeypatch.setattr(step6, "worker", lambda t: done.append(("worker", t.name, t.topology.db.primary)))
    said: list[str] = []
    target = lambda name: SimpleNamespace(name=name, topology=pooled)  # noqa: E731
    failover._repoint_direct_writers(pooled, promoted, target, said.append, 0.0)
    # the web host goes through its pgbouncer (repointed by the failover itself): only q1 and q2 are rewritten
    assert done == [("settings", "q1", "db2"), ("worker", "q1", "db2"), ("settings", "q2", "db2"), ("worker", "q2", "db2")]
    assert said and said[0].startswith("q1, q2 (no pooler there) point at db2")
    done.clear()
    failover._repoint_direct_writers(NO_QUEUE, NO_QUEUE, target, said.append, 0.0)
    assert done == [] and len(said) == 1

    def broken(t):
        raise RecipeError("bank-worker does not answer a ping")

    monkeypatch.setattr(step6, "worker", broken)
    with pytest.raises(failover.FailoverFailed, match="db2 is the primary now, but q1 still points at the old one"):
        failover._repoint_direct_writers(pooled, promoted, target, said.append, 0.0)
