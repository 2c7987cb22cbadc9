"""Unit tests for lab.cli: every command's --help, and main() turning each error into one stderr line and its exit code."""
from __future__ import annotations

import os
import re

import click
import pytest
from click.testing import CliRunner

from lab import cli as cli_module
from lab.cli import cli, main
from lab.errors import NotUp
from lab.testing import one_error_line, run_main

VERBS = {"up", "status", "test", "bench", "ssh", "destroy"}


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


@pytest.mark.parametrize("args", [["test"], ["status"], ["status", "--format=json"], ["ssh", "web1"], ["ssh", "web1", "uptime"]])
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


@pytest.mark.parametrize(("args", "flag"), [(["bench", "--users=0"], "--users"), (["bench", "--duration=100000"], "--duration")])
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


def test_debug_shows_the_traceback(no_lab, capfd, monkeypatch):
    def broken():
        raise RuntimeError("boom")

    monkeypatch.setattr(cli_module, "project", broken)
    with pytest.raises(RuntimeError, match="boom"):
        main(["--debug", "status"])


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
    (["bench", "--server=nginx"], 2, ("nginx", "gunicorn", "mod_wsgi")),
    (["bench", "--server=,"], 2, ("--server",)),
    (["bench", "--web=0"], 3, ("--web", "1 to 9")),
    (["bench", "--web=1,x"], 2, ("--web", "x")),
    (["bench", "--duration=0"], 2, ("--duration", "1 to 900")),
    (["bench", "--workers=0"], 2, ("--workers",)),
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
