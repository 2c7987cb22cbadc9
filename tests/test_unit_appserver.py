"""Unit tests for the app server choice: app_server and [appserver] resolved, `up --app-server`, templates, switching."""
from __future__ import annotations

import json
import os
import re
import shlex
import sys
import types
from dataclasses import dataclass

import jinja2
import pytest
from click.testing import CliRunner

from lab import cli as cli_module
from lab.cli import cli
from lab.errors import TopologyError
from lab.hosts import HostFacts
from lab.recipes import Target
from lab.remote import CommandResult
from lab.testing import linux_topology as linux
from lab.testing import one_error_line, run_main
from lab.topology import APP_SERVERS, AppServerSettings, Overrides, Topology, with_web_count
from provision.step1_bootstrap.recipes import APP_HOME, APP_USER, CURRENT, SETTINGS, VENV
from provision.step3_appserver import recipes as step3
from provision.step3_appserver import test_web as checks




# -- app_server: defaults → lab.toml → LAB_APP_SERVER → --app-server ------------------------------------


def test_gunicorn_two_sync_workers_by_default():
    topo = linux()
    assert topo.app_server == "gunicorn"
    assert topo.appserver == AppServerSettings(workers=2, threads=1)


def test_app_server_file_then_environment_then_flag():
    assert linux({"lab": {"app_server": "mod_wsgi"}}).app_server == "mod_wsgi"
    assert linux({"lab": {"app_server": "mod_wsgi"}}, {"LAB_APP_SERVER": "gunicorn"}).app_server == "gunicorn"
    topo = linux({"lab": {"app_server": "gunicorn"}}, {"LAB_APP_SERVER": "gunicorn"}, Overrides(app_server="mod_wsgi"))
    assert topo.app_server == "mod_wsgi"
    assert linux({"lab": {"app_server": "mod_wsgi"}}, overrides=Overrides(app_server="gunicorn")).app_server == "gunicorn"


@pytest.mark.parametrize(
    ("file_data", "environ", "overrides", "where"),
    [
        ({"lab": {"app_server": "uwsgi"}}, {}, Overrides(), "lab.app_server"),
        ({}, {"LAB_APP_SERVER": "uwsgi"}, Overrides(), "LAB_APP_SERVER"),
        ({}, {"LAB_APP_SERVER": "gunicorn"}, Overrides(app_server="uwsgi"), "--app-server"),
        ({}, {}, Overrides(app_server="Gunicorn"), "--app-server"),
    ],
)
def test_unknown_app_server_names_its_source_and_lists_the_choices(file_data, environ, overrides, where):
    with pytest.raises(TopologyError) as caught:
        linux(file_data, environ, overrides)
    message = str(caught.value)
    assert message.startswith(f"{where} must be one of gunicorn, mod_wsgi (got ")
    assert caught.value.exit_code == 3


# -- [appserver] workers and threads ---------------------------------------------------------------------


def test_mod_wsgi_defaults_to_two_processes_of_five_threads():
    assert linux(overrides=Overrides(app_server="mod_wsgi")).appserver == AppServerSettings(workers=2, threads=5)


def test_appserver_table_sets_both_knobs_for_either_server():
    table = {"appserver": {"workers": 4, "threads": 3}}
    assert linux(table).appserver == AppServerSettings(4, 3)
    assert linux(table, overrides=Overrides(app_server="mod_wsgi")).appserver == AppServerSettings(4, 3)


def test_threads_left_out_follow_the_chosen_server():
    table = {"appserver": {"workers": 6}}
    assert linux(table).appserver == AppServerSettings(6, 1)
    assert linux(table, {"LAB_APP_SERVER": "mod_wsgi"}).appserver == AppServerSettings(6, 5)


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("workers", 0, r"^appserver\.workers must be from 1 to 16 \(got 0\)$"),
    ("workers", 17, r"^appserver\.workers must be from 1 to 16 \(got 17\)$"),
    ("workers", "many", r"^appserver\.workers must be an integer from 1 to 16 \(got 'many'\)$"),
    ("workers", True, r"^appserver\.workers must be an integer from 1 to 16"),
    ("workers", 2.5, r"^appserver\.workers must be an integer from 1 to 16"),
    ("threads", 0, r"^appserver\.threads must be from 1 to 32 \(got 0\)$"),
    ("threads", 33, r"^appserver\.threads must be from 1 to 32 \(got 33\)$"),
    ("threads", "x", r"^appserver\.threads must be an integer from 1 to 32"),
])
def test_out_of_range_knobs_name_the_key_and_the_range(key, value, expected):
    with pytest.raises(TopologyError, match=expected) as caught:
        linux({"appserver": {key: value}})
    assert caught.value.exit_code == 3


def test_unknown_appserver_key_lists_the_allowed_ones():
    with pytest.raises(TopologyError, match=r"^lab\.toml \[appserver\]: unknown key 'processes'; allowed: threads, workers$"):
        linux({"appserver": {"processes": 2}})


def test_appserver_must_be_a_table():
    with pytest.raises(TopologyError, match=r"\[appserver\] must be a table"):
        linux({"appserver": 3})


def test_appserver_is_a_known_top_level_table():
    with pytest.raises(TopologyError) as caught:
        linux({"servers": {}})
    assert "appserver" in str(caught.value)


# -- the state file -----------------------------------------------------------------------------------


def test_round_trip_through_json_keeps_the_choice_and_the_knobs():
    topo = linux({"appserver": {"workers": 3, "threads": 7}}, overrides=Overrides(app_server="mod_wsgi", web=2))
    data = topo.to_dict()
    assert (data["app_server"], data["appserver"]) == ("mod_wsgi", {"workers": 3, "threads": 7})
    again = Topology.from_dict(json.loads(json.dumps(data)))
    assert again == topo
    assert again.to_dict() == data


def test_state_written_before_the_knobs_existed_reads_as_gunicorn_defaults():
    data = linux().to_dict()
    del data["appserver"]
    assert Topology.from_dict(data).appserver == AppServerSettings(2, 1)
    del data["app_server"]
    assert Topology.from_dict(data) == linux()


def test_growing_the_web_tier_keeps_the_app_server():
    topo = linux({"appserver": {"threads": 9}}, overrides=Overrides(app_server="mod_wsgi"))
    grown = with_web_count(topo, 3)
    assert (grown.app_server, grown.appserver) == ("mod_wsgi", AppServerSettings(2, 9))


def test_recipes_and_checks_know_every_app_server():
    assert set(step3.SERVER_UNITS) == set(APP_SERVERS)
    assert checks.SERVER_UNITS == step3.SERVER_UNITS
    assert set(checks.SERVER_PROGRAMS) == set(APP_SERVERS)


# -- lab up --app-server ----------------------------------------------------------------------------------


def test_up_help_offers_every_app_server():
    result = CliRunner().invoke(cli, ["up", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "--app-server NAME" in text
    for name in APP_SERVERS:
        assert name in text


def test_up_with_unknown_app_server_is_a_topology_error(no_lab, capfd):
    code, _, err = run_main(["up", "--app-server=uwsgi"], capfd)
    assert code == 3
    assert one_error_line(err) == "lab: error: --app-server must be one of gunicorn, mod_wsgi (got 'uwsgi')"
    assert not (no_lab / ".lab").exists()


def test_up_passes_the_flag_to_the_topology(no_lab, monkeypatch, recorded_up):
    seen = recorded_up
    monkeypatch.setenv("LAB_APP_SERVER", "gunicorn")
    result = CliRunner().invoke(cli, ["up", "--app-server", "mod_wsgi"])
    assert result.exit_code == 0, result.output
    assert seen[0].app_server == "mod_wsgi"
    CliRunner().invoke(cli, ["up"])
    assert seen[1].app_server == "gunicorn"  # the flag is not remembered: like --web, it is this run's choice


# -- the templates ------------------------------------------------------------------------------------------


TOPOLOGY = linux({"appserver": {"workers": 3, "threads": 4}}, overrides=Overrides(web=2, app_server="mod_wsgi"))
WEB2 = TOPOLOGY.host("web2")  # 192.168.56.22


def rendered_by_recipe(templates, topology: Topology, host: str = "web2") -> dict[str, str]:
    """What the step 3 recipes write on a fresh web host of this topology, path → text."""
    web = FakeWeb()
    run_step3(templates, topology, web, host)
    return web.files


def test_apache_listens_on_the_host_ip_and_port_8000_only(templates):
    ports = rendered_by_recipe(templates, TOPOLOGY)["/etc/apache2/ports.conf"]
    assert ports.startswith("# managed by lab")
    directives = [line for line in ports.splitlines() if line.strip() and not line.startswith("#")]
    assert directives == [f"Listen {WEB2.ip}:8000"]


def test_mod_wsgi_passes_the_authorization_header_to_the_site(templates):
    # Without it the API's bearer tokens never reach Django under mod_wsgi: every /api/ request is 401.
    site = rendered_by_recipe(templates, TOPOLOGY)[step3.APACHE_SITE]
    assert re.search(r"^\s*WSGIPassAuthorization On$", site, re.M)


def test_site_runs_daemon_processes_as_the_app_user_with_the_knobs(templates):
    site = rendered_by_recipe(templates, TOPOLOGY)[step3.APACHE_SITE]
    daemon = re.findall(r"^\s*WSGIDaemonProcess (.*)$", site, re.M)
    assert len(daemon) == 1
    name, *options = daemon[0].split()
    options = dict(option.split("=", 1) for option in options)
    assert name == "bank"
    assert (options["user"], options["group"]) == (APP_USER, APP_USER)
    assert (options["processes"], options["threads"]) == ("3", "4")
    assert (options["python-home"], options["python-path"]) == (VENV, CURRENT)
    assert re.search(rf"^\s*WSGIScriptAlias / {APP_HOME}/bank\.wsgi process-group=bank application-group=%{{GLOBAL}}$", site, re.M)


def test_site_is_daemon_mode_only_with_a_reachable_socket_prefix(templates):
    site = rendered_by_recipe(templates, TOPOLOGY)[step3.APACHE_SITE]
    lines = [line.strip() for line in site.splitlines()]
    assert "WSGIRestrictEmbedded On" in lines
    assert "WSGISocketPrefix /run/apache2/wsgi" in lines
    assert f"<VirtualHost {WEB2.ip}:8000>" in lines
    assert not any(line.startswith("Listen") for line in lines)  # ports.conf alone says where Apache listens
    assert "0.0.0.0" not in site and "*:" not in site and "127.0.0.1" not in site


def test_knob_defaults_reach_the_site(templates):
    site = rendered_by_recipe(templates, linux(overrides=Overrides(app_server="mod_wsgi")), "web1")[step3.APACHE_SITE]
    assert " processes=2 threads=5 " in site


def test_wsgi_entry_point_sets_the_settings_path_then_imports_the_site(templates, monkeypatch):
    text = rendered_by_recipe(templates, TOPOLOGY)[step3.WSGI_SCRIPT]
    assert text.startswith("# managed by lab")
    site = types.ModuleType("bank.wsgi")
    site.application = object()
    monkeypatch.setitem(sys.modules, "bank", types.ModuleType("bank"))
    monkeypatch.setitem(sys.modules, "bank.wsgi", site)
    monkeypatch.delenv("BANK_CONFIG", raising=False)
    namespace: dict = {}
    exec(compile(text, step3.WSGI_SCRIPT, "exec"), namespace)
    assert os.environ.pop("BANK_CONFIG") == SETTINGS
    assert namespace["application"] is site.application


@pytest.mark.parametrize(("threads", "worker_class"), [(1, "sync"), (4, "gthread")])
def test_gunicorn_takes_the_knobs(templates, threads, worker_class):
    topology = linux({"appserver": {"workers": 5, "threads": threads}})
    unit = rendered_by_recipe(templates, topology, "web1")["/etc/systemd/system/gunicorn.service"]
    exec_start = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    assert len(exec_start) == 1
    assert f"--bind 192.168.56.21:8000 --workers 5 --worker-class {worker_class} --threads {threads} " in exec_start[0]
    assert "--keep-alive 75 " in exec_start[0]  # above nginx's 60 s upstream idle timeout


TEMPLATE_VALUES = {
    "step3_appserver/templates/apache-bank.conf.j2": {
        "user": APP_USER, "venv": VENV, "current": CURRENT, "port": 8000, "processes": 2, "threads": 5,
        "socket_prefix": "/run/apache2/wsgi", "script": f"{APP_HOME}/bank.wsgi", "script_dir": APP_HOME,
        "script_name": "bank.wsgi",
    },
    "step3_appserver/templates/apache-ports.conf.j2": {"port": 8000},
    "step3_appserver/templates/bank.wsgi.j2": {"settings": SETTINGS},
    "step3_appserver/templates/gunicorn.service.j2": {
        "user": APP_USER, "current": CURRENT, "settings": SETTINGS, "venv": VENV, "port": 8000, "workers": 2,
        "worker_class": "sync", "threads": 1, "keepalive_s": 75, "request_timeout_s": 60,
    },
}


@pytest.mark.parametrize(("name", "value"), [(n, v) for n in sorted(TEMPLATE_VALUES) for v in sorted(TEMPLATE_VALUES[n])])
def test_step3_templates_refuse_a_missing_value(templates, name, value):
    values = {k: v for k, v in TEMPLATE_VALUES[name].items() if k != value}
    with pytest.raises(jinja2.UndefinedError, match=value):
        templates.get_template(name).render(host=WEB2, topology=TOPOLOGY, **values)


@pytest.mark.parametrize("name", sorted(TEMPLATE_VALUES))
def test_step3_templates_render_completely(templates, name):
    text = templates.get_template(name).render(host=WEB2, topology=TOPOLOGY, **TEMPLATE_VALUES[name])
    assert text.startswith("# managed by lab") and text.endswith("\n")
    assert "{{" not in text and "{%" not in text and "None" not in text


# -- switching in place, on a make-believe web host --------------------------------------------------------


@dataclass
class Unit:
    enabled: bool = False
    active: bool = False


class FakeWeb:
    """A web host with just enough systemd, Debian packaging and Apache tooling for the step 3 recipes."""

    def __init__(self, gunicorn: Unit | None = None) -> None:
        self.units: dict[str, Unit] = {"gunicorn": gunicorn} if gunicorn else {}
        self.files: dict[str, str] = {}
        self.packages: set[str] = set()
        self.warm_ups = 0
        self.most_listening = 0
        self.runs_current_release = True

    def listening(self) -> list[str]:
        return [name for name, unit in self.units.items() if unit.active]

    def install(self, names) -> None:
        self.packages.update(names)
        if "apache2" in names and "apache2" not in self.units:
            # Debian's apache2 enables its unit and default site; policy-rc.d keeps it from starting.
            self.units["apache2"] = Unit(enabled=True)
            self.files["/etc/apache2/sites-enabled/000-default.conf"] = "<VirtualHost *:80>"
        if "libapache2-mod-wsgi-py3" in names:
            self.files["/etc/apache2/mods-enabled/wsgi.load"] = "LoadModule wsgi_module"

    def run(self, command: str, user: str | None = None) -> CommandResult:
        def done(code: int = 0, out: str = "", err: str = "") -> CommandResult:
            return CommandResult(command, code, out, err)

        if command.startswith("ss -Hltn 'sport = :8000' | grep -q "):
            return done(0 if self.listening() else 1)
        if command.startswith("python3 -c "):
            if not self.listening():
                return done(1, err="http://192.168.56.22:8000/health/: <urlopen error [Errno 111] Connection refused>")
            self.warm_ups += 1
            return done()
        if command == "systemctl daemon-reload":
            if "/etc/systemd/system/gunicorn.service" in self.files:
                self.units.setdefault("gunicorn", Unit())
            return done()
        if command == "apache2ctl configtest":
            return done()
        if command.startswith("timeout 60 sh -c ") and "readlink /proc/$p/cwd" in command:
            return done(0 if self.listening() else 124)  # every app process in the current release
        if command.startswith("sh -c ") and "readlink /proc/$p/cwd" in command:
            return done(0 if self.runs_current_release else 1)
        words = shlex.split(command)
        if words[:1] == ["test"] and "||" in words:  # Target.absent: test -e P || test -L P
            return done(0 if words[2] in self.files else 1)
        if words[:2] == ["test", "-e"]:
            return done(0 if words[2] in self.files else 1)
        if words[:2] == ["rm", "-rf"]:
            self.files.pop(words[2], None)
            return done()
        if words[:2] == ["a2enmod", "-q"]:
            self.files[f"/etc/apache2/mods-enabled/{words[2]}.load"] = "LoadModule"
            return done()
        if words[:2] == ["a2ensite", "-q"]:
            self.files[f"/etc/apache2/sites-enabled/{words[2]}.conf"] = "symlink"
            return done()
        if words[0] == "systemctl":
            return self.systemctl(words[1], words[-1], done)
        raise AssertionError(f"unexpected command: {command}")

    def systemctl(self, verb: str, name: str, done) -> CommandResult:
        unit = self.units.get(name)
        if verb == "is-active":
            return done(0 if unit and unit.active else 3, "active" if unit and unit.active else "inactive")
        if verb == "is-enabled":
            return done(0 if unit and unit.enabled else 1)
        if unit is None:
            return done(5, err=f"Unit {name}.service not found.")
        if verb in ("start", "restart"):
            if any(other != name for other in self.listening()):
                return done(1, err=f"{name}: Address already in use: {self.listening()} holds the port")
            unit.active = True
            self.most_listening = max(self.most_listening, len(self.listening()))
        elif verb == "stop":
            unit.active = False
        elif verb == "reload":
            if not unit.active:
                return done(1, err=f"{name}.service is not active, cannot reload.")
        elif verb in ("enable", "disable"):
            unit.enabled = verb == "enable"
        else:
            raise AssertionError(f"unexpected systemctl {verb}")
        return done()

    def close(self) -> None:
        pass


class FakeTarget(Target):
    """Target with files and packages kept in the FakeWeb; everything else through the real helpers."""

    def __init__(self, web: FakeWeb, topology: Topology, host: str, templates: jinja2.Environment, events=()) -> None:
        super().__init__(web, topology.host(host), topology, HostFacts(proxy_url=None), {}, templates, lambda n: web)
        self.web = web
        self.events.update(events)

    def file(self, path, content, mode=0o644, owner="root", group="root", events=()) -> bool:
        if self.web.files.get(path) == content:
            return False
        self.changed(f"{'updated' if path in self.web.files else 'created'} {path}", *events)
        self.web.files[path] = content
        return True

    def packages(self, *names: str) -> bool:
        missing = [n for n in names if n not in self.web.packages]
        if missing:
            self.web.install(missing)
            self.changed(f"installed {' '.join(missing)}")
        return bool(missing)


def run_step3(templates, topology: Topology, web: FakeWeb, host: str = "web2", events=()) -> list[str]:
    """The app server recipes in their definition order, as converge() runs them; the changes they report."""
    target = FakeTarget(web, topology, host, templates, events)
    for func in (step3.gunicorn, step3.mod_wsgi):
        func(target)
    return target.changes


GUNICORN = linux(overrides=Overrides(web=2))
MOD_WSGI = linux(overrides=Overrides(web=2, app_server="mod_wsgi"))


def test_switching_to_mod_wsgi_retires_gunicorn_then_starts_apache(templates):
    web = FakeWeb(gunicorn=Unit(enabled=True, active=True))
    changes = run_step3(templates, MOD_WSGI, web)
    # Apache installed and configured while gunicorn still serves; the switch itself is one rolling window.
    assert changes[-3:] == ["stopped gunicorn", "disabled gunicorn", "started apache2"]
    assert "installed apache2 libapache2-mod-wsgi-py3" in changes
    assert "removed /etc/apache2/sites-enabled/000-default.conf" in changes
    assert web.listening() == ["apache2"]
    assert web.units["gunicorn"] == Unit(enabled=False, active=False)  # the unit file stays, for switching back
    assert web.warm_ups == 1
    assert web.most_listening == 1


def test_a_converged_mod_wsgi_host_reports_no_changes_and_is_not_warmed_again(templates):
    web = FakeWeb(gunicorn=Unit(enabled=True, active=True))
    run_step3(templates, MOD_WSGI, web)
    assert run_step3(templates, MOD_WSGI, web) == []
    assert web.warm_ups == 1


def test_switching_back_retires_apache_first_and_keeps_its_files(templates):
    web = FakeWeb()
    assert run_step3(templates, GUNICORN, web)[-1] == "started gunicorn"
    run_step3(templates, MOD_WSGI, web)
    changes = run_step3(templates, GUNICORN, web)
    assert changes == ["stopped apache2", "disabled apache2", "enabled gunicorn", "started gunicorn"]
    assert web.listening() == ["gunicorn"]
    assert web.units["apache2"] == Unit(enabled=False, active=False)
    assert step3.APACHE_SITE in web.files
    assert run_step3(templates, GUNICORN, web) == []
    changes = run_step3(templates, MOD_WSGI, web)
    assert changes == ["stopped gunicorn", "disabled gunicorn", "enabled apache2", "started apache2"]
    assert web.most_listening == 1  # never two servers on the app port


def test_a_stray_second_server_is_stopped_and_the_labs_own_left_alone(templates):
    web = FakeWeb()
    run_step3(templates, MOD_WSGI, web)
    web.units["gunicorn"] = Unit(enabled=True, active=True)  # started by hand beside Apache
    assert run_step3(templates, MOD_WSGI, web) == ["stopped gunicorn", "disabled gunicorn"]
    assert web.listening() == ["apache2"]


def test_gunicorn_host_without_apache_has_nothing_to_retire(templates):
    web = FakeWeb()
    run_step3(templates, GUNICORN, web)
    assert "apache2" not in web.units
    assert run_step3(templates, GUNICORN, web) == []


def test_a_server_left_on_an_old_release_by_an_interrupted_run_is_reloaded(templates):
    web = FakeWeb()
    run_step3(templates, GUNICORN, web)
    web.runs_current_release = False  # `current` switched, then Ctrl-C: no app-code event in the next run
    assert run_step3(templates, GUNICORN, web) == ["reloaded gunicorn"]


@pytest.mark.parametrize("event", ["app-code", "app-config"])
def test_new_release_or_settings_reload_the_only_serving_server_gracefully(templates, event):
    # No balancer to take the host out of (FakeTarget's rollout has none): a graceful reload in place.
    web = FakeWeb()
    run_step3(templates, MOD_WSGI, web)
    assert run_step3(templates, MOD_WSGI, web, events=[event]) == ["reloaded apache2"]
    assert web.warm_ups == 2  # the reloaded daemons load the new release before the balancer's first request
    run_step3(templates, GUNICORN, web)
    assert run_step3(templates, GUNICORN, web, events=[event]) == ["reloaded gunicorn"]


def test_changed_knobs_rewrite_the_site_and_restart_apache(templates):
    web = FakeWeb()
    run_step3(templates, MOD_WSGI, web)
    busier = linux({"appserver": {"workers": 4}}, overrides=Overrides(web=2, app_server="mod_wsgi"))
    assert run_step3(templates, busier, web) == [f"updated {step3.APACHE_SITE}", "restarted apache2"]
    assert " processes=4 threads=5 " in web.files[step3.APACHE_SITE]


def test_a_site_that_never_answers_fails_the_recipe(templates, monkeypatch):
    web = FakeWeb()
    real_run = web.run

    def unhealthy(command, user=None):
        if command.startswith("python3 -c "):
            return CommandResult(command, 1, "", "http://192.168.56.22:8000/health/: HTTP Error 503: Service Unavailable")
        return real_run(command, user)

    monkeypatch.setattr(web, "run", unhealthy)
    with pytest.raises(step3.RecipeError, match=r"did not answer after apache2 started: .*HTTP Error 503"):
        run_step3(templates, MOD_WSGI, web)
