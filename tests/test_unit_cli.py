"""Unit tests for lab.cli: every command's --help, and main() turning each error into one stderr line and its exit code."""
from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from lab import cli as cli_module
from lab import lifecycle
from lab.cli import cli, main
from lab.errors import NotUp, TopologyError, UsageError
from lab.recipes import discover_steps
from lab.state import LabDir
from lab.testing import one_error_line, run_main
from lab.topology import Overrides, resolve
from lab.verify import SkippedCheck

VERBS = {"up", "status", "creds", "test", "bench", "ssh", "destroy"}


def words(text: str) -> str:
    return " ".join(text.split())


# -- --help ----------------------------------------------------------------------------------------


def test_the_verbs_are_all_there():
    assert VERBS <= set(cli.commands)


@pytest.mark.parametrize("name", sorted(cli.commands))
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_has_help(name, flag):
    command = cli.commands[name]
    result = CliRunner().invoke(cli, [name, flag])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: cli {name} ") or result.output.startswith(f"Usage: lab {name} ")
    description = (command.help or "").strip().split("\n\n")[0]
    assert len(description) > 20, f"`lab {name}` has no description"
    assert words(description) in words(result.output)
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert param.help, f"`lab {name} {param.opts[0]}` has no help text"


def test_group_help_lists_every_command():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "Build the Django Deployment Workshop" in result.output
    for name in cli.commands:
        assert re.search(rf"^\s+{name}\s+\S", result.output, re.M), name


# -- main(): errors become exit codes ----------------------------------------------------------------


def test_unknown_verb_is_a_usage_error(no_lab, capfd):
    code, out, err = run_main(["frobnicate"], capfd)
    assert code == 2
    line = one_error_line(err)
    assert "frobnicate" in line
    assert out == ""


def test_unknown_option_is_a_usage_error(no_lab, capfd):
    code, _, err = run_main(["status", "--colour"], capfd)
    assert code == 2
    assert "--colour" in one_error_line(err)


def test_up_with_non_integer_web_is_a_usage_error(no_lab, capfd):
    code, _, err = run_main(["up", "--web=abc"], capfd)
    assert code == 2
    line = one_error_line(err)
    assert "--web" in line and "abc" in line
    assert not (no_lab / ".lab").exists()


def test_up_with_zero_web_is_a_topology_error(no_lab, capfd):
    code, _, err = run_main(["up", "--web=0"], capfd)
    assert code == 3
    line = one_error_line(err)
    assert "--web" in line and "1 to 9" in line
    assert not (no_lab / ".lab").exists()  # refused before any provider work


def test_up_with_unknown_provider_lists_the_providers(no_lab, capfd):
    code, _, err = run_main(["up", "--provider=nope"], capfd)
    assert code == 3
    line = one_error_line(err)
    assert "local" in line and "vagrant" in line and "nope" in line
    assert not (no_lab / ".lab").exists()


def test_lab_toml_errors_in_the_project_folder(no_lab, capfd):
    (no_lab / "lab.toml").write_text("[tiers.web]\ncount = 42\n")
    code, _, err = run_main(["up"], capfd)
    assert code == 3
    assert "tiers.web.count" in one_error_line(err)


def test_environment_errors_name_the_variable(no_lab, capfd, monkeypatch):
    monkeypatch.setenv("LAB_WEB", "lots")
    code, _, err = run_main(["up"], capfd)
    assert code == 3
    assert "LAB_WEB" in one_error_line(err)


def test_malformed_lab_toml_is_a_config_error(no_lab, capfd):
    (no_lab / "lab.toml").write_text("[lab\nname = 'x'\n")
    code, _, err = run_main(["up"], capfd)
    assert code == 4
    line = one_error_line(err)
    assert "lab.toml" in line and "TOML" in line
    assert not (no_lab / ".lab").exists()


@pytest.mark.parametrize("args", [["test"], ["status"], ["status", "--format=json"], ["ssh", "web1"], ["ssh", "web1", "uptime"],
                                  ["creds"]])
def test_commands_needing_a_lab_say_there_is_none(no_lab, capfd, args):
    code, out, err = run_main(args, capfd)
    assert code == 7
    line = one_error_line(err)
    assert "no lab in" in line and str(no_lab / ".lab") in line and "lab up" in line
    assert out == ""


def test_destroy_with_no_lab_has_nothing_to_do(no_lab, capfd):
    code, out, err = run_main(["destroy"], capfd)
    assert code == 0
    assert "nothing to destroy" in out
    assert err == ""
    assert not (no_lab / ".lab").exists()


def test_bench_with_unknown_scenario_is_a_usage_error(no_lab, capfd):
    code, _, err = run_main(["bench", "--scenario=nope"], capfd)
    assert code == 2
    line = one_error_line(err)
    assert "nope" in line and "mix" in line and "hello" in line


@pytest.mark.parametrize(("args", "flag"), [
    (["bench", "--users=0"], "--users"), (["bench", "--duration=100000"], "--duration"),
    # checked before anything runs (the lab's lock, a results folder): a trial got exit 13 after an empty results folder
    (["bench", "--spawn-rate=-1"], "--spawn-rate"), (["bench", "--spawn-rate=0"], "--spawn-rate"),
    (["bench", "--fail-under-rps=-5"], "--fail-under-rps"), (["bench", "--max-p95-ms=-1"], "--max-p95-ms"),
])
def test_bench_limits_are_usage_errors(no_lab, capfd, args, flag):
    code, _, err = run_main(args, capfd)
    assert code == 2
    assert flag in one_error_line(err)


def test_version_exits_zero(no_lab, capfd):
    code, out, _ = run_main(["--version"], capfd)
    assert code == 0
    assert "0.1.0" in out


def test_multi_line_lab_error_is_folded_to_one_line(no_lab, capfd, monkeypatch):
    def broken():
        raise NotUp("first part\n  second part")

    monkeypatch.setattr(cli_module, "project", broken)
    code, _, err = run_main(["status"], capfd)
    assert code == 7
    assert one_error_line(err) == "lab: error: first part second part"


def test_unexpected_exception_is_an_internal_error_without_traceback(no_lab, capfd, monkeypatch):
    def broken():
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(cli_module, "project", broken)
    code, _, err = run_main(["status"], capfd)
    assert code == 70
    lines = err.strip().splitlines()
    assert lines == ["lab: internal error (RuntimeError): boom second line; rerun with --debug"]


def debug_run(args, capfd) -> tuple[int, str]:
    """main() with --debug: its exit code (the error's own, as without --debug) and stderr, which has the traceback."""
    with pytest.raises(SystemExit) as done:
        main(args)
    err = capfd.readouterr().err
    assert "Traceback (most recent call last)" in err
    return done.value.code, err


def test_debug_shows_the_traceback(no_lab, capfd, monkeypatch):
    def broken():
        raise RuntimeError("boom")

    monkeypatch.setattr(cli_module, "project", broken)
    code, err = debug_run(["--debug", "status"], capfd)
    assert code == 70 and "RuntimeError: boom" in err


def test_keyboard_interrupt_exits_130(no_lab, capfd, monkeypatch):
    def interrupted():
        raise KeyboardInterrupt

    def fake_exit(code):  # main() may leave through os._exit (not to wait for worker threads): keep pytest alive
        raise SystemExit(code)

    monkeypatch.setattr(cli_module, "project", interrupted)
    monkeypatch.setattr(os, "_exit", fake_exit)
    code, _, err = run_main(["status"], capfd)
    assert code == 130
    assert err.strip().startswith("lab: interrupted")


def test_no_arguments_prints_help_and_exits_0(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "Commands:" in out and "destroy" in out


def test_local_provider_without_root_is_refused_before_anything_is_made(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LAB_DIR", str(tmp_path / ".lab"))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(SystemExit) as exit_info:
        main(["up", "--provider=local"])
    assert exit_info.value.code == 6
    err = capsys.readouterr().err
    assert err.startswith("lab: error:") and "root" in err and err.count("\n") == 1
    assert not (tmp_path / ".lab").exists()


@pytest.mark.parametrize(("args", "code", "needles"), [
    (["bench", "--server=nginx"], 3, ("--server", "nginx", "gunicorn", "mod_wsgi")),  # as `lab up --app-server`
    (["bench", "--server=,"], 2, ("--server",)),
    (["bench", "--server=gunicorn,"], 2, ("--server", "empty item")),
    (["bench", "--web=1,,2"], 2, ("--web", "empty item")),
    (["bench", "--web=0"], 3, ("--web", "1 to 9")),
    (["bench", "--web=1,x"], 2, ("--web", "x")),
    (["bench", "--duration=0"], 2, ("--duration", "1 to 900")),
    (["bench", "--workers=0"], 3, ("--workers", "1 to 16")),  # as lab.toml's [appserver] workers
    (["bench", "--threads=99"], 3, ("--threads", "1 to 32")),
])
def test_bench_bad_input_is_refused_before_touching_a_lab(no_lab, capfd, args, code, needles):
    result, _, err = run_main(args, capfd)
    assert result == code
    line = one_error_line(err)
    for needle in needles:
        assert needle in line


def test_bench_with_no_lab_says_so(no_lab, capfd):
    code, _, err = run_main(["bench", "--duration=2"], capfd)
    assert code == 7
    assert "lab up" in one_error_line(err)


def test_bench_compare_of_missing_runs_is_a_usage_error(no_lab, capfd):
    code, _, err = run_main(["bench", "--compare", "20260101-000000", "20260102-000000"], capfd)
    assert code == 2
    assert "no bench results in" in one_error_line(err)


# -- inputs are checked where they enter ------------------------------------------------------------


STEPS = discover_steps()


# `lab up --step 0` is the bare hosts (workshop mode: an attendee does step 1 by hand), so only `lab test` refuses 0.
@pytest.mark.parametrize("args", [["up", "--step", "9"], ["up", "--step=-1"],
                                  ["test", "--step", "9"], ["test", "--step", "0"]])
def test_a_step_that_does_not_exist_is_refused_before_anything_is_made(no_lab, capfd, args):
    code, out, err = run_main(args, capfd)
    assert code == 2
    line = one_error_line(err)
    assert "--step" in line and f"(got {args[-1].split('=')[-1]})" in line
    for step in STEPS:  # the steps named are the ones in provision/, found, not written down
        assert f"{step.number} {step.folder.name.split('_', 1)[1]}" in line
    assert out == "" and not (no_lab / ".lab").exists()


def test_every_step_that_exists_is_accepted():
    for step in STEPS:
        lifecycle.check_step(step.number)
    lifecycle.check_step(None)
    assert len(STEPS) >= 5


@pytest.mark.parametrize("verb", ["up", "test"])
def test_step_help_lists_the_steps_found(verb):
    result = CliRunner().invoke(cli, [verb, "--help"])
    for step in STEPS:
        assert f"{step.number} {step.folder.name.split('_', 1)[1]}" in words(result.output)


@pytest.mark.parametrize(("args", "flag"), [(["test", "--tier", "web,,db"], "--tier"), (["test", "--tier=web,"], "--tier"),
                                            (["bench", "--threads=1,,4"], "--threads"), (["bench", "--workers=,2"], "--workers")])
def test_empty_list_items_are_refused(no_lab, capfd, args, flag):
    code, _, err = run_main(args, capfd)
    assert code == 2
    line = one_error_line(err)
    assert flag in line and "empty item" in line


def test_an_unknown_app_server_has_one_exit_code_from_flags_and_lab_toml(no_lab, capfd):
    results = [run_main(args, capfd) for args in (["up", "--app-server=uwsgi"], ["bench", "--server=gunicorn,uwsgi"])]
    (no_lab / "lab.toml").write_text('[lab]\napp_server = "uwsgi"\n')
    results.append(run_main(["up"], capfd))
    assert [code for code, _, _ in results] == [3, 3, 3]
    for (_, _, err), where in zip(results, ["--app-server", "--server", "lab.app_server"]):
        line = one_error_line(err)
        assert where in line and "'uwsgi'" in line and "gunicorn, mod_wsgi" in line
    assert not (no_lab / ".lab").exists()


# -- --debug anywhere; tracebacks only with it --------------------------------------------------------


@pytest.mark.parametrize("args", [["--debug", "up", "--web=0"], ["up", "--debug", "--web=0"], ["up", "--web=0", "--debug"]])
def test_debug_is_accepted_anywhere_before_or_after_the_verb(no_lab, capfd, args):
    code, err = debug_run(args, capfd)
    assert code == TopologyError.exit_code and "TopologyError: --web" in err  # the traceback, and the same exit code


@pytest.mark.parametrize("args", [["ssh", "--debug", "web1"], ["status", "--debug"], ["test", "--debug"],
                                  ["creds", "--debug"], ["bench", "--debug"]])
def test_debug_after_any_verb_shows_the_traceback(no_lab, capfd, args):
    code, err = debug_run(args, capfd)
    assert code == NotUp.exit_code and "lab.errors.NotUp" in err


def test_without_debug_the_same_error_is_one_line(no_lab, capfd):
    code, _, err = run_main(["ssh", "web1"], capfd)
    assert code == 7 and "no lab in" in one_error_line(err)


def test_lab_debug_in_the_environment_shows_the_traceback(no_lab, capfd, monkeypatch):
    monkeypatch.setenv("LAB_DEBUG", "1")
    code, err = debug_run(["status"], capfd)
    assert code == NotUp.exit_code and "lab.errors.NotUp" in err


# -- lab ssh: lab's options before HOST, the remote command after it -----------------------------------


@pytest.fixture
def fake_ssh(no_lab, monkeypatch):
    """lab ssh with the lab's ssh command line faked: records what would be exec'd."""
    ran: list[list[str]] = []

    def run(program, argv):
        ran.append(argv)
        raise SystemExit(0)

    monkeypatch.setattr(cli_module.lifecycle, "ssh_command", lambda project, host, command, terminal: ["ssh", host, *command])
    monkeypatch.setattr(cli_module.os, "execvp", run)
    return ran


@pytest.mark.parametrize(("args", "argv"), [
    (["ssh", "web1"], ["ssh", "web1"]),
    (["ssh", "web1", "ls", "-la", "/srv"], ["ssh", "web1", "ls", "-la", "/srv"]),
    (["ssh", "web1", "systemctl", "status", "--help"], ["ssh", "web1", "systemctl", "status", "--help"]),
    (["ssh", "--debug", "web1", "uptime"], ["ssh", "web1", "uptime"]),
    (["ssh", "web1", "--", "--version"], ["ssh", "web1", "--version"]),
])
def test_ssh_passes_everything_after_host_to_the_host(fake_ssh, capfd, args, argv):
    code, _, err = run_main(args, capfd)
    assert code == 0 and err == ""
    assert fake_ssh == [argv]


@pytest.mark.parametrize("args", [["ssh", "--help"], ["ssh", "web1", "--help"], ["ssh", "web1", "-h"]])
def test_ssh_help_before_or_right_after_host_shows_the_help(fake_ssh, capfd, args):
    code, out, _ = run_main(args, capfd)
    assert code == 0 and fake_ssh == []
    assert out.startswith("Usage: lab ssh [OPTIONS] HOST [COMMAND]...")
    assert "options go before HOST" in words(out) and "lab ssh web1 --help" in words(out)


@pytest.mark.parametrize("option", ["--debug", "-v", "--format=json"])
def test_ssh_refuses_an_option_right_after_host(fake_ssh, capfd, option):
    code, out, err = run_main(["ssh", "web1", option], capfd)
    assert code == 2 and out == "" and fake_ssh == []
    line = one_error_line(err)
    assert "lab's own options go before HOST" in line and f"`lab ssh web1 -- {option} ...`" in line


def test_ssh_refuses_an_unknown_option_before_host(fake_ssh, capfd):
    code, _, err = run_main(["ssh", "--colour", "web1"], capfd)
    assert code == 2 and "--colour" in one_error_line(err) and fake_ssh == []


# -- lab status, lab creds, lab test's skipped checks -------------------------------------------------


def write_lab(folder) -> LabDir:
    labdir = LabDir(folder / ".lab")
    labdir.ensure()
    labdir.write(dict(labdir.new_state(resolve({}, {}, Overrides(web=2), platform="linux")), status="up"))
    labdir.ssh_config.write_text("# the lab's ssh_config\n")
    return labdir


class StatusProvider:
    def status(self, labdir, state):
        return {"lb1": "running", "web1": "running", "web2": "running", "db1": "stopped"}


@pytest.fixture
def status_lab(no_lab, monkeypatch):
    write_lab(no_lab)
    asked: list[list[str]] = []

    def probe(labdir, topology, hosts):
        asked.append(list(hosts))
        return {"lb1": {"nginx": "up"}, "web1": {"gunicorn": "up"}, "web2": {"gunicorn": "down"}}

    monkeypatch.setattr(cli_module.lifecycle, "get_provider", lambda name: StatusProvider())
    monkeypatch.setattr(cli_module.lifecycle, "probe_services", probe)
    return asked


def test_status_shows_each_hosts_services_the_site_and_where_the_login_is(status_lab, capfd):
    code, out, _ = run_main(["status"], capfd)
    assert code == 0
    assert status_lab == [["lb1", "web1", "web2"]]  # a stopped host is not asked
    rows = {line.split()[1]: line for line in out.splitlines() if re.match(r"^\W+(lb|web|db)\d", line)}
    assert "nginx up" in rows["lb1"] and "gunicorn up" in rows["web1"]
    assert "running" in rows["web2"] and "gunicorn down" in rows["web2"]
    assert "stopped" in rows["db1"] and "postgresql@15-main down" in rows["db1"]
    assert "site: https://192.168.56.11/" in out and "`lab creds`" in out


def test_status_json_includes_the_services(status_lab, capfd):
    code, out, _ = run_main(["status", "--format", "json"], capfd)
    assert code == 0
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["web2"] == {"name": "web2", "tier": "web", "ip": "192.168.56.22", "state": "running",
                            "services": {"gunicorn": "down"}, "holds": None}  # holds: a balancer pair's address
    assert rows["db1"]["services"] == {"postgresql@15-main": "down"}


def test_creds_shows_the_site_and_this_labs_demo_login(no_lab, capfd):
    labdir = write_lab(no_lab)
    code, out, err = run_main(["creds"], capfd)
    assert code == 0 and err == ""
    values = {key: value.strip() for key, value in (line.split(":", 1) for line in out.splitlines())}
    assert values == {"site": "https://192.168.56.11/", "sign in": "https://192.168.56.11/accounts/login/",
                      "user": "demo", "password": labdir.secrets()["demo_password"]}
    assert stat.S_IMODE(labdir.secrets_file.stat().st_mode) == 0o600


def test_creds_names_the_apps_own_demo_user_and_the_secret_stays_out_of_git():
    root = Path(__file__).resolve().parent.parent
    command = (root / "app/accounts/management/commands/load_sample_data.py").read_text()
    assert f'DEMO_USERNAME = "{lifecycle.DEMO_USERNAME}"' in command
    assert ".lab/" in (root / ".gitignore").read_text().split()


SKIPPED = [SkippedCheck("step3_appserver/test_web.py::test_apache_enabled_and_running[web1]", "this lab runs gunicorn"),
           SkippedCheck("step3_appserver/test_web.py::test_apache_enabled_and_running[web2]", "this lab runs gunicorn")]


@pytest.fixture
def skipping_checks(no_lab, monkeypatch):
    def fake_test(project, tiers, junit_xml, max_step=None, on_skipped=None):
        on_skipped(SKIPPED)

    monkeypatch.setattr(cli_module.lifecycle, "test", fake_test)


def test_lab_test_counts_the_skipped_checks_and_says_how_to_see_them(skipping_checks, capfd):
    code, out, _ = run_main(["test"], capfd)
    assert code == 0
    assert "2 check(s) skipped: they do not apply to this lab (`lab test -v` names them and says why)" in out
    assert "test_apache" not in out


def test_lab_test_verbose_names_each_skipped_check_and_why(skipping_checks, capfd):
    code, out, _ = run_main(["test", "-v"], capfd)
    assert code == 0
    for check in SKIPPED:
        assert f"skipped {check.check}: this lab runs gunicorn" in out
    assert "2 check(s) skipped" in out and "`lab test -v`" not in out


def test_box_build_goes_through_the_library_to_the_vagrant_provider(monkeypatch, capfd):
    from lab.providers.vagrant import VagrantProvider

    built = []
    monkeypatch.setattr(VagrantProvider, "build_box", lambda self, say, rebuild=False: built.append(rebuild) or "lab/debian12")
    code, out, _ = run_main(["box", "build", "--rebuild"], capfd)
    assert (code, built) == (0, [True])
    assert "box lab/debian12 is ready" in out


def test_a_provider_without_a_box_refuses_box_build_in_one_line():
    from lab.providers.local import LocalProvider

    with pytest.raises(UsageError, match="without a box"):
        LocalProvider().build_box(print)


@pytest.mark.parametrize(("words", "sent"), [
    ((), []),
    (("journalctl -u gunicorn | tail",), ["journalctl -u gunicorn | tail"]),  # one word: a shell line on the host
    (("echo", "a   b", "$HOSTNAME", "x;y"), ["echo 'a   b' '$HOSTNAME' 'x;y'"]),  # several: each arrives as it is
    (("psql", "bank", "-c", "select count(*) from pg_tables"), ["psql bank -c 'select count(*) from pg_tables'"]),
])
def test_ssh_sends_several_words_quoted_and_one_word_as_a_shell_line(words, sent):
    assert lifecycle.remote_command(words) == sent


def test_lab_test_of_a_tier_the_lab_has_no_host_of_is_refused_not_passed(no_lab, capfd, monkeypatch):
    write_lab(no_lab)
    monkeypatch.setattr(cli_module.lifecycle, "status", lambda project, services=True: pytest.fail("no host is asked"))
    code, out, err = run_main(["test", "--tier", "web,cache"], capfd)
    assert code == 3 and "all checks passed" not in out
    assert one_error_line(err) == ("lab: error: this lab has no cache host, so `--tier cache` has nothing to check; "
                                   "its tiers: lb, web, db")
    code, out, err = run_main(["test", "--tier", "nosuch"], capfd)
    assert code == 3 and one_error_line(err).startswith("lab: error: unknown tier 'nosuch'; tiers: lb, web, db, cache")


def test_a_reader_that_goes_away_costs_the_command_nothing(tmp_path):
    # `lab up | head -1`: head exits after one line; every later line (from any thread) must not stop the command
    import subprocess
    import sys

    done = tmp_path / "done"
    script = (
        "import threading\n"
        "from lab import cli\n"
        "def lines(who):\n"
        "    for i in range(3000):\n"
        "        cli.say(f'{who} line {i}')\n"
        "worker = threading.Thread(target=lines, args=('thread',))\n"
        "worker.start()\n"
        "lines('main')\n"
        "worker.join()\n"
        "cli.errors.print('lab: error: one more line')\n"
        f"open({str(done)!r}, 'w').write('finished')\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout.readline().startswith(b"lab: ")
    process.stdout.close()  # the reader goes away
    assert process.wait(timeout=60) == 0
    assert done.read_text() == "finished"
