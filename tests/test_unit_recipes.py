"""Unit tests for lab.recipes: recipe discovery, applies_to, converge() over fake in-memory hosts, the report, gist(),
and the interrupt-safety helpers (completed, locked, owed) run by a real shell."""
from __future__ import annotations

import shlex
import subprocess
import threading
import time
from pathlib import Path

import jinja2
import pytest

from lab.errors import ProvisionFailed
from lab.hosts import HostFacts
from lab import stack as stacks
from lab.recipes import (ConvergeReport, Recipe, RecipeError, RecipeResult, Target, converge, load_recipes,
                         raise_for_failures)
from lab.remote import CommandResult
from lab.system import gist

NFT_OUTPUT = """\
/etc/nftables.conf:12:46-46: Error: syntax error, unexpected '}'
        tcp dport 5432 ip saddr {  } accept
                                             ^
"""


# -- a tiny in-memory host -------------------------------------------------------------------


class FakeHost:
    """Understands three commands: `cat PATH`, `put PATH VALUE` and `start SERVICE` (which may be made to fail)."""

    def __init__(self, name: str, files: dict[str, str], broken_services: set[str]) -> None:
        self.name = name
        self.files = files
        self.broken_services = broken_services
        self.commands: list[tuple[str, str | None]] = []
        self.closed = False

    def run(self, command: str, user: str | None = None) -> CommandResult:
        assert not self.closed, "command on a closed connection"
        self.commands.append((command, user))
        verb, *args = shlex.split(command)
        if verb == "cat":
            if args[0] in self.files:
                return CommandResult(command, 0, self.files[args[0]], "")
            return CommandResult(command, 1, "", f"cat: {args[0]}: No such file or directory\n")
        if verb == "put":
            self.files[args[0]] = args[1]
            return CommandResult(command, 0, "", "")
        if verb == "start":
            if args[0] in self.broken_services:
                return CommandResult(command, 1, "", NFT_OUTPUT)
            self.files[f"/run/{args[0]}"] = "running"
            return CommandResult(command, 0, "", "")
        return CommandResult(command, 127, "", f"sh: 1: {verb}: not found\n")

    def put(self, data: bytes, remote_path: str) -> None:
        self.files[remote_path] = data.decode()

    def get(self, remote_path: str) -> bytes:
        return self.files[remote_path].encode()

    def close(self) -> None:
        self.closed = True


class FakeLab:
    """Every host's files survive between connections (and between converge runs)."""

    def __init__(self, broken: dict[str, set[str]] | None = None, unreachable: set[str] = frozenset()) -> None:
        self.files: dict[str, dict[str, str]] = {}
        self.broken = broken or {}
        self.unreachable = unreachable
        self.opened: list[FakeHost] = []
        self._lock = threading.Lock()

    def connect(self, name: str) -> FakeHost:
        if name in self.unreachable:
            raise OSError(f"[Errno 113] No route to host {name}")
        with self._lock:
            host = FakeHost(name, self.files.setdefault(name, {}), self.broken.get(name, set()))
            self.opened.append(host)
        return host


# -- hand-made recipes ---------------------------------------------------------------------------


def put_file(path: str, value: str):
    def func(t) -> None:
        if t.run(f"cat {path}", check=False).stdout != value:
            t.run(f"put {path} {shlex.quote(value)}")
            t.changed(f"wrote {path}")

    return func


def start(service: str):
    def func(t) -> None:
        if t.run(f"cat /run/{service}", check=False).ok:
            return
        t.run(f"start {service}")
        t.changed(f"started {service}")

    return func


def motd(t) -> None:
    put_file("/etc/motd", f"this is {t.host.name}")(t)


RECIPES = [
    Recipe("s1.motd", 1, ("lb", "web", "db"), motd),
    Recipe("s2.database", 2, ("db",), start("postgresql")),
    Recipe("s2.db_tuning", 2, ("db",), put_file("/etc/pg.conf", "tuned")),
    Recipe("s2.schema", 2, ("web",), put_file("/srv/schema", "v1"), requires=("s2.database",), first_only=True),
    Recipe("s3.app", 3, ("web",), start("gunicorn")),
    Recipe("s3.balancer", 3, ("lb",), start("nginx")),
]
FACTS = HostFacts(proxy_url=None)
SECRETS = {"db_password": "pw"}


def by_key(report: ConvergeReport) -> dict[tuple[str, str], RecipeResult]:
    return {(r.host, r.recipe): r for r in report.results}


# -- load_recipes --------------------------------------------------------------------------------


def test_load_recipes_finds_every_step_in_order():
    recipes = load_recipes()
    steps = [r.step for r in recipes]
    assert steps == sorted(steps)
    assert set(steps) == {1, 2, 3, 4, 5, 6}
    names = [r.name for r in recipes]
    assert len(names) == len(set(names))
    for known in ("step1_bootstrap.hosts_file", "step1_bootstrap.firewall", "step2_database.postgresql",
                  "step3_appserver.gunicorn", "step5_balancer.nginx"):
        assert known in names
    for r in recipes:
        assert r.name.startswith(f"step{r.step}_")
        assert callable(r.func)
        assert r.tiers and set(r.tiers) <= set(stacks.current().tiers)


def test_load_recipes_keeps_definition_order_within_a_step():
    names = [r.name for r in load_recipes() if r.step == 1]
    assert names.index("step1_bootstrap.hosts_file") < names.index("step1_bootstrap.firewall")
    assert names.index("step1_bootstrap.app_user") < names.index("step1_bootstrap.virtualenv")
    assert names.index("step1_bootstrap.virtualenv") < names.index("step1_bootstrap.release")


def test_every_requirement_is_an_earlier_recipe():
    recipes = load_recipes()
    names = [r.name for r in recipes]
    assert any(r.requires for r in recipes)
    for index, r in enumerate(recipes):
        for needed in r.requires:
            assert needed in names[:index], f"{r.name} requires {needed}"


def test_load_recipes_collects_only_functions_defined_in_the_step():
    # step2 imports names from step1; none of step1's recipes may be collected twice
    names = [r.name for r in load_recipes()]
    assert not any(n.startswith("step2_database.") and n.split(".")[1] in {"hosts_file", "firewall"} for n in names)


DEVSERVER = "step1_bootstrap.devserver"


def test_load_recipes_max_step():
    recipes = load_recipes(max_step=2)
    assert recipes
    assert {r.step for r in recipes} == {1, 2}
    # The same recipes as a full converge's steps 1–2, plus what step 3 replaces (step 1's development server).
    assert [r.name for r in recipes if r.name != DEVSERVER] == [r.name for r in load_recipes() if r.step <= 2]
    assert {r.step for r in load_recipes(max_step=1)} == {1}


@pytest.mark.parametrize("max_step, runs_it", [(1, True), (2, True), (3, False), (5, False), (None, False)])
def test_the_development_server_is_part_of_a_converge_only_until_step_3_replaces_it(max_step, runs_it):
    names = [r.name for r in load_recipes(max_step)]
    assert (DEVSERVER in names) is runs_it
    if runs_it:  # after the site's code and settings, before anything of step 2
        assert names.index("step1_bootstrap.site_settings") < names.index(DEVSERVER)
        assert all(r.step == 1 for r in load_recipes(max_step)[:names.index(DEVSERVER)])


# -- applies_to ----------------------------------------------------------------------------------


def test_applies_to_by_tier(topology):
    r = Recipe("x.y", 1, ("web", "db"), motd)
    assert [h.name for h in topology.hosts if r.applies_to(h, topology)] == ["web1", "web2", "db1"]


def test_applies_to_first_only(topology):
    r = Recipe("x.y", 1, ("web",), motd, first_only=True)
    assert [h.name for h in topology.hosts if r.applies_to(h, topology)] == ["web1"]
    both = Recipe("x.z", 1, ("lb", "web"), motd, first_only=True)
    assert [h.name for h in topology.hosts if both.applies_to(h, topology)] == ["lb1", "web1"]


# -- converge --------------------------------------------------------------------------------------


def test_converge_collects_results_per_host(topology):
    lab = FakeLab()
    seen: list[RecipeResult] = []
    report = converge(topology, RECIPES, lab.connect, FACTS, SECRETS, on_result=seen.append)
    results = by_key(report)
    assert set(results) == {
        ("lb1", "s1.motd"), ("web1", "s1.motd"), ("web2", "s1.motd"), ("db1", "s1.motd"),
        ("db1", "s2.database"), ("db1", "s2.db_tuning"), ("web1", "s2.schema"),
        ("web1", "s3.app"), ("web2", "s3.app"), ("lb1", "s3.balancer"),
    }
    assert len(report.results) == len(results)  # each (host, recipe) once
    assert all(r.status == "changed" for r in report.results)
    assert results[("web2", "s1.motd")].changes == ["wrote /etc/motd"]
    assert results[("db1", "s2.database")].changes == ["started postgresql"]
    assert results[("db1", "s2.database")].step == 2
    assert sorted((r.host, r.recipe) for r in seen) == sorted(results)
    assert [(r.step, r.host) for r in report.results] == sorted((r.step, r.host) for r in report.results)
    assert lab.files["web2"]["/etc/motd"] == "this is web2"  # each host got its own content
    assert "/srv/schema" not in lab.files["web2"]  # first_only
    assert lab.opened and all(h.closed for h in lab.opened)
    assert report.changes == 10
    assert report.count("changed") == 10
    assert "10 recipes on 4 hosts" in report.summary()
    assert "10 changes" in report.summary()
    raise_for_failures(report)  # nothing failed: no exception


def test_second_converge_changes_nothing(topology):
    lab = FakeLab()
    converge(topology, RECIPES, lab.connect, FACTS, SECRETS)
    again = converge(topology, RECIPES, lab.connect, FACTS, SECRETS)
    assert {r.status for r in again.results} == {"ok"}
    assert again.changes == 0
    summary = again.summary()
    assert "no changes" in summary
    assert "0 changed, 10 ok, 0 failed, 0 skipped" in summary


def test_failing_recipe_skips_the_rest_of_its_host_and_its_dependents(topology):
    lab = FakeLab(broken={"db1": {"postgresql"}})
    report = converge(topology, RECIPES, lab.connect, FACTS, SECRETS)
    results = by_key(report)

    failed = results[("db1", "s2.database")]
    assert failed.status == "failed"
    assert "start postgresql" in failed.error
    assert "exited 1" in failed.error
    assert "Error: syntax error, unexpected '}'" in failed.error  # gist of the command's output
    assert "^" not in failed.error

    later = results[("db1", "s2.db_tuning")]
    assert later.status == "skipped"
    assert "db1" in later.error
    assert "/etc/pg.conf" not in lab.files["db1"]

    dependent = results[("web1", "s2.schema")]
    assert dependent.status == "skipped"
    assert "s2.database" in dependent.error
    assert "db1" in dependent.error
    assert "/srv/schema" not in lab.files["web1"]
    # once a host has skipped one recipe, its later ones are skipped too
    assert results[("web1", "s3.app")].status == "skipped"

    # independent hosts (and recipes before the failure) still converge
    assert results[("web2", "s3.app")].status == "changed"
    assert results[("lb1", "s3.balancer")].status == "changed"
    assert all(results[(h, "s1.motd")].status == "changed" for h in ("lb1", "web1", "web2", "db1"))
    assert lab.files["web2"]["/run/gunicorn"] == "running"

    assert (report.count("failed"), report.count("skipped")) == (1, 3)
    assert "1 failed, 3 skipped" in report.summary()
    assert "no changes" not in report.summary()
    with pytest.raises(ProvisionFailed) as caught:
        raise_for_failures(report)
    assert "s2.database on db1" in str(caught.value)
    assert caught.value.exit_code == 11


def test_failure_without_changes_is_not_reported_as_converged(topology):
    lab = FakeLab(broken={"db1": {"postgresql"}})
    converge(topology, RECIPES, lab.connect, FACTS, SECRETS)
    again = converge(topology, RECIPES, lab.connect, FACTS, SECRETS)
    assert again.changes == 0
    assert again.count("failed") == 1
    assert "no changes" not in again.summary()


def test_a_recipe_skipped_on_one_host_blocks_its_dependents_elsewhere(topology):
    lab = FakeLab(broken={"web1": {"gunicorn"}})
    recipes = [
        Recipe("s1.app", 1, ("web",), start("gunicorn"), first_only=True),
        Recipe("s2.static", 2, ("web",), put_file("/srv/static", "v1"), first_only=True),
        Recipe("s3.copy_static", 3, ("lb",), put_file("/srv/static", "v1"), requires=("s2.static",)),
    ]
    results = by_key(converge(topology, recipes, lab.connect, FACTS, SECRETS))
    assert results[("web1", "s1.app")].status == "failed"
    assert results[("web1", "s2.static")].status == "skipped"
    blocked = results[("lb1", "s3.copy_static")]
    assert blocked.status == "skipped"
    assert "s2.static" in blocked.error and "web1" in blocked.error
    assert "/srv/static" not in lab.files["lb1"]


def test_unreachable_host_fails_its_recipes_and_skips_dependents(topology):
    lab = FakeLab(unreachable={"db1"})
    report = converge(topology, RECIPES, lab.connect, FACTS, SECRETS)
    results = by_key(report)
    for recipe in ("s1.motd", "s2.database", "s2.db_tuning"):
        assert results[("db1", recipe)].status == "failed"
        assert "cannot reach db1" in results[("db1", recipe)].error
    assert results[("web1", "s2.schema")].status == "skipped"
    assert results[("web2", "s3.app")].status == "changed"


def test_recipe_exception_of_any_kind_is_reported_not_raised(topology):
    def boom(t) -> None:
        t.changed("half done")
        raise KeyError("missing")

    recipes = [Recipe("s1.boom", 1, ("lb",), boom), Recipe("s1.after", 1, ("lb",), motd)]
    report = converge(topology, recipes, FakeLab().connect, FACTS, SECRETS)
    results = by_key(report)
    assert results[("lb1", "s1.boom")].status == "failed"
    assert results[("lb1", "s1.boom")].changes == ["half done"]  # what it did before failing is kept
    assert "missing" in results[("lb1", "s1.boom")].error
    assert results[("lb1", "s1.after")].status == "skipped"


def test_target_gives_recipes_the_host_topology_facts_and_secrets(topology):
    seen = {}

    def look(t) -> None:
        seen[t.host.name] = (t.topology, t.facts, t.secrets["db_password"])

    facts = HostFacts(proxy_url="http://192.168.56.1:3128")
    converge(topology, [Recipe("s1.look", 1, ("web",), look)], FakeLab().connect, facts, SECRETS)
    assert set(seen) == {"web1", "web2"}
    assert seen["web2"] == (topology, facts, "pw")


# -- completed(), locked(), owed(): interrupt-safe creation, run by a real shell on this machine -----------


class ShellHost:
    """A host that is this machine's own sh, so flock, markers and leftover processes behave for real."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    def run(self, command: str, user: str | None = None) -> CommandResult:
        self.commands.append(command)
        done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30)
        return CommandResult(command, done.returncode, done.stdout, done.stderr)


@pytest.fixture
def shell_target(topology, tmp_path):
    target = Target(ShellHost(), topology.hosts[0], topology, FACTS, SECRETS, jinja2.Environment(), lambda name: None)
    target.LOCK_DIR = str(tmp_path / "locks")
    target.OWED_DIR = str(tmp_path / "owed")
    (tmp_path / "locks").mkdir()
    return target


def make_venv_like(folder: Path, runs: Path) -> str:
    """A creation in several commands, starting from scratch, that counts its runs."""
    return f"echo run >> {runs} && rm -rf {folder} && mkdir {folder} && touch {folder}/python && touch {folder}/pip"


def test_completed_runs_once_then_finds_its_marker(shell_target, tmp_path):
    folder, runs = tmp_path / "venv", tmp_path / "runs"
    assert shell_target.completed(f"{folder}/.done", make_venv_like(folder, runs)) is True
    assert (folder / "pip").exists() and (folder / ".done").exists()
    assert shell_target.completed(f"{folder}/.done", make_venv_like(folder, runs)) is False
    assert runs.read_text().count("run") == 1


def test_completed_redoes_a_half_made_thing_from_scratch(shell_target, tmp_path):
    folder, runs = tmp_path / "venv", tmp_path / "runs"
    folder.mkdir()
    (folder / "python").touch()  # what an interrupted run left: python, no pip, no marker
    (folder / "stale").touch()
    assert shell_target.completed(f"{folder}/.done", make_venv_like(folder, runs)) is True
    assert sorted(p.name for p in folder.iterdir()) == [".done", "pip", "python"]


def test_completed_leaves_no_marker_when_the_command_fails(shell_target, tmp_path):
    folder = tmp_path / "venv"
    with pytest.raises(RecipeError, match="exited 1"):
        shell_target.completed(f"{folder}/.done", f"mkdir {folder} && touch {folder}/python && false")
    assert (folder / "python").exists() and not (folder / ".done").exists()
    assert shell_target.completed(f"{folder}/.done", f"rm -rf {folder} && mkdir {folder}") is True


def test_completed_waits_for_a_leftover_run_instead_of_racing_it(shell_target, tmp_path):
    folder, runs = tmp_path / "venv", tmp_path / "runs"
    marker = f"{folder}/.done"
    # An interrupted `lab up` left its command going on the host: slow, holding the lock, about to finish.
    slow = f"test -e {marker} && exit 0; (sleep 1 && {make_venv_like(folder, runs)}) && touch {marker}"
    leftover = subprocess.Popen(["sh", "-c", shell_target.locked(marker, slow)])
    try:
        time.sleep(0.3)
        assert shell_target.completed(marker, make_venv_like(folder, runs)) is False  # waited, then found it done
    finally:
        leftover.wait(10)
    assert runs.read_text().count("run") == 1


def test_locked_names_one_lock_per_key(shell_target):
    assert shell_target.locked("a", "true").split()[:2] == shell_target.locked("a", "false").split()[:2]
    assert shell_target.locked("a", "true").split()[1] != shell_target.locked("b", "true").split()[1]
    assert shell_target.locked("a", "echo 'it''s'").endswith(shlex.quote("echo 'it''s'"))


def test_owed_is_false_and_leaves_nothing_when_its_block_finishes(shell_target, tmp_path):
    with shell_target.owed("svc-restart") as earlier:
        assert earlier is False
        assert (tmp_path / "owed" / "svc-restart").exists()  # spans the block
    assert not (tmp_path / "owed" / "svc-restart").exists()
    with shell_target.owed("svc-restart") as earlier:
        assert earlier is False


def test_owed_tells_the_next_run_when_a_run_stopped_between_change_and_follow_up(shell_target, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with shell_target.owed("svc-restart"):
            raise KeyboardInterrupt  # the config was written; the restart never came
    with shell_target.owed("svc-restart") as earlier:
        assert earlier is True
    with shell_target.owed("svc-restart") as earlier:
        assert earlier is False  # paid


# -- report and gist -------------------------------------------------------------------------------


def test_summary_counts_and_singular_change():
    report = ConvergeReport(
        [RecipeResult("web1", "a.b", 1, "changed", ["one"]), RecipeResult("web1", "a.c", 1, "ok")], seconds=1.5
    )
    assert report.summary() == "2 recipes on 1 hosts: 1 changed, 1 ok, 0 failed, 0 skipped; 1 change (1.5 s)"


def test_gist_picks_the_error_line_from_nft_output():
    assert gist(NFT_OUTPUT) == "/etc/nftables.conf:12:46-46: Error: syntax error, unexpected '}'"


def test_gist_picks_the_first_error_line_among_many():
    output = "Reading package lists...\nE: Unable to locate package nope\nE: cannot continue\n"
    assert gist(output) == "E: Unable to locate package nope"


def test_gist_without_error_words_gives_the_last_real_line():
    output = "starting\n  all good here  \n^^^^\n   \n"
    assert gist(output) == "all good here"


def test_gist_of_nothing():
    assert gist("") == "no output"
    assert gist("\n ^^^ \n---\n") == "no output"


# -- commands: args quoted in as testinfra's host.run(command, *args) does; peers as Targets ----------------------


def test_run_quotes_each_arg_into_its_placeholder(shell_target, tmp_path):
    odd = tmp_path / "it's a $HOME; rm -rf ~"
    result = shell_target.run("mkdir %s && printf '%%s|' %s %s", odd, "a b", 7)  # str() of non-strings too
    assert odd.is_dir() and result.stdout == "a b|7|"
    assert shell_target.remote.commands[-1] == f"mkdir {shlex.quote(str(odd))} && printf '%s|' 'a b' 7"
    assert shell_target.test("test -d %s", odd) and not shell_target.test("test -f %s", odd)


def test_a_command_without_args_is_left_as_written(shell_target):
    assert shell_target.run("printf '%s' 100%").stdout == "100%"
    assert shell_target.remote.commands[-1] == "printf '%s' 100%"


def test_locked_and_completed_quote_their_args_like_run(shell_target, tmp_path):
    folder = tmp_path / "two words"
    assert shell_target.completed(f"{folder}/.done", "rm -rf %s && mkdir %s", folder, folder) is True
    assert (folder / ".done").exists()
    assert shell_target.locked("k", "rm -rf %s", "a b").endswith(shlex.quote("rm -rf 'a b'"))


def test_a_command_on_another_host_is_checked_and_names_that_host(topology):
    lab = FakeLab()
    lab.files["web1"] = {"/srv/manifest": "v2"}
    here = Target(lab.connect("lb1"), topology.host("lb1"), topology, FACTS, SECRETS, jinja2.Environment(), lab.connect)
    web1 = here.on("web1")
    assert here.on("web1") is web1 and web1.host.name == "web1"  # one connection per peer
    assert web1.run("cat %s", "/srv/manifest").stdout == "v2"
    with pytest.raises(RecipeError, match=r"^`cat /srv/missing` exited 1 on web1: cat: /srv/missing: No such file"):
        web1.run("cat %s", "/srv/missing")
    with pytest.raises(RecipeError, match=r"^`cat /srv/missing` exited 1: "):  # the recipe's own host: named by its result
        here.run("cat %s", "/srv/missing")
    assert not hasattr(here, "peer")  # no unchecked way to another host


def test_the_balancer_copies_static_files_from_web1_through_checked_commands(topology):
    from provision.step5_balancer import recipes as step5

    manifest = f"{step5.STATIC_ROOT}/staticfiles.json"

    class StaticHost(FakeHost):
        """Also sha256sum, tar -czf and rm as the balancer's static_files recipe runs them."""

        def run(self, command, user=None):
            words = shlex.split(command)
            if words[0] == "sha256sum":
                if words[1] not in self.files:
                    return CommandResult(command, 1, "", f"sha256sum: {words[1]}: No such file or directory\n")
                return CommandResult(command, 0, f"{self.files[words[1]]}  {words[1]}\n", "")
            if words[:2] == ["tar", "-czf"]:
                self.files[words[2]] = "archive"
            elif words[:2] == ["rm", "-f"]:
                self.files.pop(words[2], None)
            elif words[:2] == ["rm", "-rf"]:  # the balancer's unpack-and-swap, one shell command
                self.files[manifest] = lab.files["web1"][manifest]
            else:
                return super().run(command, user)
            return CommandResult(command, 0, "", "")

    class StaticLab(FakeLab):
        def connect(self, name):
            host = StaticHost(name, self.files.setdefault(name, {}), set())
            self.opened.append(host)
            return host

    lab = StaticLab()
    lab.files["web1"] = {manifest: "abc123"}
    lb = Target(lab.connect("lb1"), topology.host("lb1"), topology, FACTS, SECRETS, jinja2.Environment(), lab.connect)
    step5.static_files(lb)
    assert lb.changes == ["copied static files from web1"]
    assert lab.files["lb1"][step5.STATIC_ARCHIVE] == "archive" and step5.STATIC_ARCHIVE not in lab.files["web1"]
    step5.static_files(lb)  # the same manifest on both: nothing to copy
    assert lb.changes == ["copied static files from web1"]
    del lab.files["web1"][manifest]  # web1 lost its tree: an error naming web1
    with pytest.raises(RecipeError, match=r"^`sha256sum /srv/bank/static/staticfiles.json` exited 1 on web1: "):
        step5.static_files(lb)
