"""Unit tests for remembered `lab up` choices (Overrides ↔ state, plan_up's precedence) and `lab bench` putting the lab back."""
from __future__ import annotations

import json
import os

import pytest

import lab.bench
from lab import lifecycle
from lab.errors import ProvisionFailed, TopologyError
from lab.bench import BenchRequest
from lab.lifecycle import Project, plan_up
from lab.bench.matrix import CellReport, Run
from lab.providers.base import HostFacts
from lab.recipes import ConvergeReport
from lab.topology import Overrides, Topology, choice_flag, resolve


@pytest.fixture
def project(tmp_path, monkeypatch) -> Project:
    """A project folder with no lab.toml and no LAB_* variables from outside."""
    for key in list(os.environ):
        if key.startswith("LAB_"):
            monkeypatch.delenv(key)
    return Project.here(tmp_path, environ={})


def linux(overrides: Overrides = Overrides(), file_data: dict | None = None) -> Topology:
    return resolve(file_data or {}, {}, overrides, platform="linux")


def write_state(project: Project, topology: Topology, choices: dict | None) -> dict:
    project.labdir.ensure()
    state = dict(project.labdir.new_state(topology), status="up", choices=choices)
    project.labdir.write(state)
    return project.labdir.read()


def webs(topology: Topology) -> list[str]:
    return [h.name for h in topology.tier("web")]


# -- Overrides as plain data ------------------------------------------------------------------


def test_choices_hold_only_what_was_chosen_and_round_trip():
    chosen = Overrides(web=2, app_server="mod_wsgi", counts={"lb": 2})
    assert chosen.choices() == {"web": 2, "app_server": "mod_wsgi", "counts.lb": 2}
    assert Overrides.from_choices(chosen.choices()) == chosen
    assert Overrides().choices() == {}
    assert Overrides.from_choices({}) == Overrides()


def test_from_choices_drops_keys_this_lab_does_not_know():
    assert Overrides.from_choices({"web": 3, "flavour": "big", "web.x": 1, "counts": 2}) == Overrides(web=3)
    # preset is a flag like --web: remembered and read back
    assert Overrides.from_choices({"preset": "workshop"}) == Overrides(preset="workshop")


def test_describing_a_topology_asks_for_exactly_it():
    made = linux(Overrides(web=3, app_server="mod_wsgi"))
    assert Overrides.describing(made).choices() == {"web": 3, "provider": "local", "app_server": "mod_wsgi",
                                                    "counts.lb": 1, "counts.db": 1, "counts.cache": 0, "counts.api": 0, "counts.loadgen": 0,
                                                    "counts.monitor": 0, "counts.q": 0, "counts.search": 0,
                                                    "pooler": "none", "replica_reads": False, "db_primary": "db1"}
    assert linux(Overrides.describing(made)) == made


@pytest.mark.parametrize(("key", "value", "flag"), [
    ("web", 2, "--web=2"), ("app_server", "mod_wsgi", "--app-server=mod_wsgi"), ("counts.lb", 2, "--lb=2"),
])
def test_choice_flag_names_the_flag(key, value, flag):
    assert choice_flag(key, value) == flag


# -- plan_up: defaults → lab.toml → LAB_* → remembered → flags ------------------------------------


def test_a_new_lab_remembers_the_flags_that_differ_from_lab_toml(project):
    plan = plan_up(project, Overrides(web=2, app_server="gunicorn"), None)
    assert webs(plan.topology) == ["web1", "web2"]
    assert plan.choices == {"web": 2}  # gunicorn is what lab.toml (the default) gives anyway
    assert plan.kept == {}


def test_a_plain_up_keeps_the_remembered_web_count_and_says_how_to_change_it(project):
    state = write_state(project, linux(Overrides(web=2)), {"web": 2})
    plan = plan_up(project, Overrides(), state)
    assert webs(plan.topology) == ["web1", "web2"]
    assert plan.choices == plan.kept == {"web": 2}
    assert plan.keeping() == ("keeping web×2 from your earlier `lab up --web=2`; `--web=1` or `--forget` goes back "
                              "to what lab.toml/LAB_* say")


def test_a_remembered_app_server_is_kept_beside_a_new_flag(project):
    state = write_state(project, linux(Overrides(app_server="mod_wsgi")), {"app_server": "mod_wsgi"})
    plan = plan_up(project, Overrides(web=2), state)
    assert (plan.topology.app_server, webs(plan.topology)) == ("mod_wsgi", ["web1", "web2"])
    assert plan.choices == {"app_server": "mod_wsgi", "web": 2}
    assert plan.kept == {"app_server": "mod_wsgi"}
    assert plan.keeping().startswith("keeping mod_wsgi from your earlier `lab up --app-server=mod_wsgi`; "
                                     "`--app-server=gunicorn`")


def test_a_flag_equal_to_lab_toml_forgets_the_choice_so_lab_toml_governs_again(project):
    state = write_state(project, linux(Overrides(web=2)), {"web": 2})
    plan = plan_up(project, Overrides(web=1), state)
    assert webs(plan.topology) == ["web1"] and plan.choices == {} and plan.kept == {}
    (project.root / "lab.toml").write_text("[tiers.web]\ncount = 3\n")
    state = write_state(project, plan.topology, plan.choices)
    assert webs(plan_up(project, Overrides(), state).topology) == ["web1", "web2", "web3"]


def test_a_changed_lab_toml_takes_effect_where_nothing_was_remembered(project):
    state = write_state(project, linux(Overrides(app_server="mod_wsgi")), {"app_server": "mod_wsgi"})
    (project.root / "lab.toml").write_text("[tiers.web]\ncount = 2\n")
    plan = plan_up(project, Overrides(), state)
    assert (plan.topology.app_server, webs(plan.topology)) == ("mod_wsgi", ["web1", "web2"])


def test_remembered_choices_beat_lab_environment_variables(project, monkeypatch):
    state = write_state(project, linux(Overrides(web=2)), {"web": 2})
    monkeypatch.setenv("LAB_WEB", "1")
    plan = plan_up(project, Overrides(), state)
    assert webs(plan.topology) == ["web1", "web2"]
    assert "keeping web×2" in plan.keeping() and "`--web=1`" in plan.keeping()
    monkeypatch.setenv("LAB_WEB", "2")  # LAB_* now says the same: nothing left to remember
    assert plan_up(project, Overrides(), state).choices == {}


def test_this_commands_flags_beat_remembered_choices(project):
    state = write_state(project, linux(Overrides(web=3, app_server="mod_wsgi")), {"web": 3, "app_server": "mod_wsgi"})
    plan = plan_up(project, Overrides(web=2, app_server="gunicorn"), state)
    assert (plan.topology.app_server, webs(plan.topology)) == ("gunicorn", ["web1", "web2"])
    assert plan.choices == {"web": 2} and plan.kept == {}


def test_forget_drops_every_remembered_choice(project):
    state = write_state(project, linux(Overrides(web=3, app_server="mod_wsgi")), {"web": 3, "app_server": "mod_wsgi"})
    plan = plan_up(project, Overrides(), state, forget=True)
    assert plan.topology == linux() and plan.choices == {} and plan.kept == {}
    assert plan_up(project, Overrides(web=2), state, forget=True).choices == {"web": 2}


def test_a_lab_made_before_choices_were_remembered_is_kept_as_it_was_made(project):
    state = write_state(project, linux(Overrides(web=2, app_server="mod_wsgi")), None)
    plan = plan_up(project, Overrides(), state)
    assert (plan.topology.app_server, webs(plan.topology)) == ("mod_wsgi", ["web1", "web2"])
    assert plan.choices == plan.kept == {"web": 2, "app_server": "mod_wsgi"}
    assert plan.inferred
    assert plan.keeping().startswith("keeping web×2 and mod_wsgi as the lab was made; `--web=1 --app-server=gunicorn`")


def test_lab_toml_that_needs_a_remembered_choice_still_resolves(project):
    (project.root / "lab.toml").write_text('[hosts.web3]\nmemory = 1024\n')  # only valid with three web hosts
    plan = plan_up(project, Overrides(web=3), None)
    assert plan.choices == {"web": 3} and plan.defaults is None
    state = write_state(project, plan.topology, plan.choices)
    plan = plan_up(project, Overrides(app_server="mod_wsgi"), state)
    assert webs(plan.topology) == ["web1", "web2", "web3"] and plan.topology.host("web3").memory_mb == 1024
    assert plan.choices == {"web": 3, "app_server": "mod_wsgi"} and plan.kept == {"web": 3}
    assert plan.keeping() == ("keeping web×3 from your earlier `lab up --web=3`; `--forget` goes back to what "
                              "lab.toml/LAB_* say")


def test_a_bad_remembered_choice_names_the_state_file_and_the_way_out(project):
    state = write_state(project, linux(), {"web": 0})  # edited by hand
    with pytest.raises(TopologyError, match="--web") as caught:
        plan_up(project, Overrides(app_server="mod_wsgi"), state)
    assert str(project.labdir.state_file) in str(caught.value) and "--forget" in str(caught.value)
    assert "(with --web=0 remembered in" in str(caught.value)  # names the flag, not just "a choice"
    assert plan_up(project, Overrides(), state, forget=True).choices == {}
    assert plan_up(project, Overrides(web=2), state).choices == {"web": 2}  # a flag replaces it


def test_shrinking_below_a_failed_over_primary_never_points_at_forget_which_keeps_it(project):
    # after `lab failover db` db2 is the primary; --forget keeps that (a failover is not a flag)
    state = write_state(project, linux(Overrides(counts={"db": 2}, db_primary="db2")),
                        {"counts.db": 2, lifecycle.FAILOVER_CHOICE: "db2"})
    for forget in (False, True):
        with pytest.raises(TopologyError) as caught:
            plan_up(project, Overrides(counts={"db": 1}), state, forget=forget)
        assert "--forget" not in str(caught.value)
        assert str(caught.value).endswith("or `lab failover db` makes db1 the primary again first")


@pytest.mark.parametrize("remembered", [None, {"web": 2}])
def test_a_bad_flag_is_refused_with_its_name_whatever_is_remembered(project, remembered):
    state = write_state(project, linux(Overrides(web=2)), remembered)
    for flags, needle in ((Overrides(web=0), "--web"), (Overrides(app_server="uwsgi"), "--app-server")):
        with pytest.raises(TopologyError, match=needle):
            plan_up(project, flags, state)


# -- up(): the choices reach the state file -------------------------------------------------------


class FakeProvider:
    """Makes nothing; records what it was asked to make."""

    name = "local"

    def __init__(self) -> None:
        self.made: list[Topology] = []

    def pin_cpus(self, project, cpus) -> None:
        pass

    def host_cpu_seconds(self, project) -> dict:
        return {}

    def preflight(self, topology, labdir, say) -> None:
        pass

    def up(self, topology, labdir, state, say, offline=False) -> list:
        self.made.append(topology)
        return []

    def facts(self, topology) -> HostFacts:
        return HostFacts(proxy_url=None)

    def cpu_seconds(self, labdir, state) -> dict:
        return {}


@pytest.fixture
def fake_hosts(project, monkeypatch) -> FakeProvider:
    provider = FakeProvider()
    for verbs in (lifecycle, lab.bench):
        monkeypatch.setattr(verbs, "get_provider", lambda name: provider)
    monkeypatch.setattr(lifecycle.recipes_module, "load_recipes", lambda max_step=None: [])
    monkeypatch.setattr(lifecycle.recipes_module, "converge", lambda *args, **kwargs: ConvergeReport([], 0.0))
    return provider


def test_up_writes_the_choices_and_a_plain_up_keeps_them(project, fake_hosts):
    said: list[str] = []
    lifecycle.up(project, Overrides(web=2), said.append, lambda result: None)
    assert project.labdir.read()["choices"] == {"web": 2}
    assert not said
    lifecycle.up(project, Overrides(), said.append, lambda result: None)
    assert [webs(t) for t in fake_hosts.made] == [["web1", "web2"], ["web1", "web2"]]
    assert project.labdir.read()["choices"] == {"web": 2}
    assert said == ["keeping web×2 from your earlier `lab up --web=2`; `--web=1` or `--forget` goes back to what "
                    "lab.toml/LAB_* say"]


def test_up_of_a_version_1_lab_keeps_it_and_records_its_choices(project, fake_hosts):
    project.labdir.ensure()
    old = project.labdir.new_state(linux(Overrides(web=2)))
    del old["choices"]
    project.labdir.state_file.write_text(json.dumps(dict(old, version=1, status="up")))
    said: list[str] = []
    lifecycle.up(project, Overrides(), said.append, lambda result: None)
    assert webs(fake_hosts.made[0]) == ["web1", "web2"]
    assert project.labdir.read()["choices"] == {"web": 2}
    assert said[0].startswith("keeping web×2 as the lab was made")


def test_up_with_an_explicit_topology_leaves_the_choices_alone(project, fake_hosts):
    write_state(project, linux(Overrides(web=2)), {"web": 2})
    lifecycle.up(project, Overrides(), lambda message: None, lambda result: None,
                 topology=linux(Overrides(web=2, app_server="mod_wsgi")))
    assert fake_hosts.made[0].app_server == "mod_wsgi"
    assert project.labdir.read()["choices"] == {"web": 2}


def test_up_with_a_step_that_does_not_exist_makes_nothing(project, fake_hosts):
    with pytest.raises(lifecycle.UsageError, match="--step"):
        lifecycle.up(project, Overrides(web=2), lambda message: None, lambda result: None, max_step=9)
    assert not fake_hosts.made and not project.labdir.exists()


# -- bench puts the lab back ----------------------------------------------------------------------


@pytest.fixture
def bench_lab(project, monkeypatch, fake_hosts):
    """A running lab (gunicorn, web×1, 2 workers × 1 thread) whose up() and measurements are faked and recorded."""
    write_state(project, linux(), {})
    ups: list[Topology] = []
    measured: list[str] = []
    plan = {"fail_up": None, "fail_measure": None, "fail_put_back": None}

    def fake_up(project_, overrides, say, on_result, max_step=None, topology=None, forget=False):
        ups.append(topology)
        failure = plan["fail_put_back"] if topology == linux() else plan["fail_up"]
        if failure:
            raise failure
        state = project_.labdir.read()
        project_.labdir.write(dict(state, topology=topology.to_dict()))

    def fake_measure(cell, target, settings, results_dir, host_cpu, say, web_hosts):
        measured.append(cell.label)
        if plan["fail_measure"] and cell.server == "mod_wsgi":
            raise plan["fail_measure"]
        run = Run(True, "", 100.0, 5.0, 9.0, 12.0, 0.0, 300, 0, 0, 0, {"web1": 300}, [], 0.5, 0.4, {"web1": 0.3},
                  [(1.0, 100.0, 9.0)])
        return CellReport(cell, {}, [run], None, "web1 CPU")

    monkeypatch.setattr(lifecycle, "up", fake_up)
    monkeypatch.setattr(lab.bench, "measure_cell", fake_measure)
    monkeypatch.setattr(lab.bench.money, "total_balance", lambda project_: 0)  # no site to ask
    monkeypatch.setattr(lab.bench.money, "ensure_customers", lambda project_, count: None)  # no site to make them on
    monkeypatch.setattr(lab.bench, "_wait_until_answering", lambda project, topology, say: None)  # no site to drain
    monkeypatch.setattr(lab.bench.lifecycle, "ca_file", lambda project: project.labdir.path / "ca.crt")  # https
    return ups, measured, plan


def bench(project, said: list[str] | None = None, **asked) -> list[str]:
    """lab.bench.bench with short runs; what it said lands in `said` even when it raises."""
    said = [] if said is None else said
    lab.bench.bench(project, BenchRequest(duration_s=1, warmup_s=0, repeats=1, **asked), said.append, lambda result: None)
    return said


def test_bench_that_switches_servers_puts_the_lab_back(project, bench_lab):
    ups, measured, _ = bench_lab
    said = bench(project, servers=("gunicorn", "mod_wsgi"))
    assert measured == ["gunicorn web×1 workers=2 threads=1 https", "mod_wsgi web×1 workers=2 threads=5 https"]
    assert [t.app_server for t in ups] == ["mod_wsgi", "gunicorn"]
    assert ups[-1] == linux()
    assert "the lab is back as it was: gunicorn web×1 workers=2 threads=1" in said
    assert project.labdir.topology() == linux()


@pytest.mark.parametrize(("asked", "switched_to"), [
    ({"webs": (2,)}, "web×2"), ({"workers": (4,)}, "workers=4"), ({"threads": (3,)}, "threads=3"),
])
def test_bench_puts_back_the_web_count_workers_and_threads(project, bench_lab, asked, switched_to):
    ups, measured, _ = bench_lab
    bench(project, **asked)
    assert switched_to in measured[0]
    assert len(ups) == 2 and ups[-1] == linux()


def test_bench_that_measures_the_lab_as_it_is_switches_nothing(project, bench_lab):
    ups, measured, _ = bench_lab
    said = bench(project)
    assert measured == ["gunicorn web×1 workers=2 threads=1 https"] and ups == []
    assert not [line for line in said if "back" in line]


@pytest.mark.parametrize("failure", [KeyboardInterrupt(), RuntimeError("locust died")])
def test_bench_interrupted_mid_matrix_still_puts_the_lab_back(project, bench_lab, failure):
    ups, _, plan = bench_lab
    plan["fail_measure"] = failure
    said: list[str] = []
    with pytest.raises(type(failure)):
        bench(project, said, servers=("gunicorn", "mod_wsgi"))
    assert [t.app_server for t in ups] == ["mod_wsgi", "gunicorn"]
    assert "the lab is back as it was: gunicorn web×1 workers=2 threads=1" in said
    assert project.labdir.topology() == linux()


def test_bench_whose_switch_fails_puts_the_lab_back_and_reports_the_switch(project, bench_lab):
    ups, measured, plan = bench_lab
    plan["fail_up"] = ProvisionFailed("1 recipe failed: web1 step3 apache")
    with pytest.raises(ProvisionFailed, match="apache"):
        bench(project, servers=("gunicorn", "mod_wsgi"))
    assert ups[-1] == linux() and measured == ["gunicorn web×1 workers=2 threads=1 https"]


def test_bench_that_cannot_put_the_lab_back_says_so_and_reports_the_first_error(project, bench_lab):
    _, _, plan = bench_lab
    plan["fail_measure"] = KeyboardInterrupt()
    plan["fail_put_back"] = KeyboardInterrupt()  # Ctrl-C again while putting it back
    said: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        bench(project, said, servers=("gunicorn", "mod_wsgi"))
    assert any(line.startswith("could not put the lab back (interrupted); `lab up`") for line in said)


def test_bench_whose_put_back_fails_after_a_good_run_is_an_error(project, bench_lab):
    _, _, plan = bench_lab
    plan["fail_put_back"] = ProvisionFailed("1 recipe failed")
    with pytest.raises(ProvisionFailed):
        bench(project, servers=("gunicorn", "mod_wsgi"))


def test_two_choices_that_each_make_the_other_redundant_keep_one(project):
    # --preset workshop gives web×2, as --web=2 does: the lab must still be web×2 on the next plain `lab up`.
    state = write_state(project, linux(Overrides(web=2)), {"web": 2})
    plan = plan_up(project, Overrides(preset="workshop"), state)
    assert webs(plan.topology) == ["web1", "web2"]
    assert plan.choices == {"preset": "workshop"}  # this command's flag is the one remembered
    state = write_state(project, plan.topology, plan.choices)
    assert webs(plan_up(project, Overrides(), state).topology) == ["web1", "web2"]
    assert plan_up(project, Overrides(preset="workshop", web=2), None).choices != {}
