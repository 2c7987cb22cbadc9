"""A real lab keeps what `lab up --web=2` chose, shows its services, heals a stopped one, and `lab bench` puts it back."""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import ssl
import urllib.parse
import urllib.request

import pytest

from lab.testing import ScratchLab, needs_root, scratch_lab

NAME = os.environ.get("TEST_LAB_NAME", "labremember")  # its own name and subnet: other labs on this machine must not matter
pytestmark = pytest.mark.integration

needs_root()

ALL_UP = {"lb1": {"nginx": "up"}, "web1": {"gunicorn": "up"}, "web2": {"gunicorn": "up"},
          "db1": {"postgresql@15-main": "up"}}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    with scratch_lab(NAME, range(100, 110), folder=tmp_path_factory.mktemp("remember")) as the_lab:
        yield the_lab


def services(lab: ScratchLab) -> dict[str, dict[str, str]]:
    rows = json.loads(lab.ok("status", "--format", "json"))
    assert all(row["state"] == "running" for row in rows), rows
    return {row["name"]: row["services"] for row in rows}


def test_a_plain_up_keeps_what_an_earlier_flag_chose(lab: ScratchLab) -> None:
    lab.ok("up", "--web=2")
    output = lab.ok("up")
    assert "keeping web×2 from your earlier `lab up --web=2`; `--web=1`" in output
    assert "removing" not in output and "no changes" in output
    assert lab.state["choices"] == {"web": 2}
    assert [h["name"] for h in lab.state["topology"]["hosts"]] == ["lb1", "web1", "web2", "db1"]
    assert services(lab) == ALL_UP


def test_status_says_a_stopped_service_is_down_and_up_heals_it(lab: ScratchLab) -> None:
    lab.ok("ssh", "web2", "systemctl", "stop", "gunicorn")
    assert services(lab) == dict(ALL_UP, web2={"gunicorn": "down"})
    table = lab.ok("status")
    assert re.search(r"web2 .* running .* gunicorn down", table), table
    assert "`lab creds`" in table
    healed = lab.ok("up")
    assert re.search(r"changed\s+web2 .*started gunicorn", healed), healed
    assert services(lab) == ALL_UP


def test_lab_test_counts_the_skipped_checks_and_v_names_them(lab: ScratchLab) -> None:
    plain = lab.ok("test", "--tier", "web")
    assert re.search(r"lab: \d+ check\(s\) skipped: they do not apply to this lab \(`lab test -v` names them", plain)
    verbose = lab.ok("test", "--tier", "web", "-v")
    for web in ("web1", "web2"):
        assert f"skipped step3_appserver/test_web.py::test_apache_enabled_and_running[{web}]: this lab runs gunicorn" \
            in verbose


def test_creds_sign_in_to_the_site(lab: ScratchLab) -> None:
    values = dict(line.split(":", 1) for line in lab.ok("creds").splitlines())
    values = {key: value.strip() for key, value in values.items()}
    assert values["user"] == "demo" and len(values["password"]) >= 24
    jar = http.cookiejar.CookieJar()
    context = ssl.create_default_context(cafile=lab.ok("ca").strip())  # the site is https, signed by the lab's CA
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor(jar),
                                         urllib.request.HTTPSHandler(context=context))
    with opener.open(values["sign in"], timeout=10) as page:
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.read().decode()).group(1)
    form = urllib.parse.urlencode({"username": values["user"], "password": values["password"],
                                   "csrfmiddlewaretoken": token}).encode()
    request = urllib.request.Request(values["sign in"], data=form, headers={"Referer": values["sign in"]})
    with opener.open(request, timeout=10) as signed_in:
        assert signed_in.url != values["sign in"]  # Django redirects away from the form only when the login worked
    assert any(cookie.name == "sessionid" for cookie in jar)


def test_bench_puts_the_lab_back_as_it_found_it(lab: ScratchLab) -> None:
    output = lab.ok("bench", "--server=gunicorn,mod_wsgi", "--duration", "3", "--warmup", "1", "--repeats", "1",
                    "--users", "4", "--scenario", "hello", timeout=900)
    assert "switching the lab to mod_wsgi web×2" in output
    assert "the lab is back as it was: gunicorn web×2 workers=2 threads=1" in output
    assert lab.state["topology"]["app_server"] == "gunicorn"
    assert lab.state["topology"]["appserver"] == {"workers": 2, "threads": 1}
    assert lab.state["choices"] == {"web": 2}
    assert services(lab) == ALL_UP
    apache = lab.run("ssh", "web1", "systemctl", "is-active", "apache2")
    assert apache.stdout.strip() in ("inactive", "failed"), apache.stdout
