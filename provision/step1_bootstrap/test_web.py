"""Step 1 checks on the web hosts: the app user, the venv with the pinned Django 5.2 on Python 3.11 installed with
hashes from a wheel cache the host cannot write, the release, and a running app instance on the first web host."""

import json
import re

import pytest

from provision.step1_bootstrap.recipes import APP_SERVER_TIERS

TIERS = APP_SERVER_TIERS  # the web hosts, and step 6's api hosts (the same site and app server)
# `lab check`: one line per check, what to try when it fails (lab/workshop.py prints it).
HINTS = {
    "test_app_user_is_a_system_user_without_login": "`useradd --system --home-dir /srv/bank --no-create-home --shell /usr/sbin/nologin bank`",
    "test_venv_runs_the_hosts_python_3_11": "`python3 -m venv /srv/bank/venv` (the python3-venv package first)",
    "test_pinned_django_5_2_installed": "hash the pins of app/requirements.txt into /srv/bank/requirements.txt, `pip install --require-hashes -r` it (docs/steps/1-bootstrap.md)",
    "test_every_requirement_is_pinned_with_the_hashes_of_its_wheels": "each line of /srv/bank/requirements.txt: `name==version --hash=sha256:<sha256sum of its wheel>`, no line without",
    "test_the_wheel_cache_is_read_only_in_the_host": "`findmnt /var/cache/lab/wheels` must show ro: undo any remount with `mount -o remount,ro,bind /var/cache/lab/wheels`",
    "test_current_release_holds_the_site": "unpack app/ into /srv/bank/releases/NAME and `ln -sfn` /srv/bank/current to it",
    "test_an_app_instance_answers_on_the_first_web_host": "as bank in /srv/bank/current, with BANK_CONFIG=/etc/bank/bank.toml: `manage.py migrate`, then `manage.py runserver <web1's IP>:8000` (unit bank-devserver)",
}
APP_PORT = 8000
# From the host itself (its firewall lets in the balancer only): the site's health page, as the balancer asks it.
HEALTH = ("import json, sys, urllib.request\n"
          "opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))\n"
          "with opener.open(sys.argv[1], timeout=30) as response:\n"
          "    print(json.dumps({'status': response.status, 'body': json.loads(response.read())}))\n")


def test_app_user_is_a_system_user_without_login(host):
    user = host.user("bank")
    assert user.exists
    assert user.shell == "/usr/sbin/nologin"
    assert user.uid < 1000


def test_venv_runs_the_hosts_python_3_11(host):
    version = host.check_output("/srv/bank/venv/bin/python -c 'import sys; print(sys.version_info[:2])'")
    assert version == "(3, 11)"


def test_pinned_django_5_2_installed(host):
    version = host.check_output("/srv/bank/venv/bin/python -c 'import django; print(django.__version__)'")
    assert re.fullmatch(r"5\.2\.\d+", version)
    pinned = host.file("/srv/bank/requirements.txt").content_string
    assert f"Django=={version}" in pinned


def test_every_requirement_is_pinned_with_the_hashes_of_its_wheels(host):
    lines = [line for line in host.file("/srv/bank/requirements.txt").content_string.splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines, "/srv/bank/requirements.txt is missing or empty"
    unhashed = [line for line in lines if not re.fullmatch(r"\S+==\S+( --hash=sha256:[0-9a-f]{64})+", line)]
    assert not unhashed, f"/srv/bank/requirements.txt has lines without a pin and its hashes: {unhashed}"


def test_the_wheel_cache_is_read_only_in_the_host(host, facts):
    if facts.wheelhouse is None:
        pytest.skip("this provider's hosts install from PyPI (no shared wheel cache)")
    assert "ro" in host.check_output("findmnt -no OPTIONS %s", facts.wheelhouse).split(",")
    assert host.run("test -w %s", facts.wheelhouse).rc != 0  # not even root in the host may write there


def test_current_release_holds_the_site(host):
    current = host.file("/srv/bank/current")
    assert current.is_symlink
    assert current.linked_to.startswith("/srv/bank/releases/")
    assert host.file(f"{current.linked_to}/manage.py").exists


def test_an_app_instance_answers_on_the_first_web_host(host, node, lab):
    # Step 1 ends with the site running on web1 (Django's development server until step 3 replaces it); the
    # other web hosts get an app server at step 3.
    if node.name != lab.tier("web")[0].name:
        pytest.skip("step 1 runs an app instance on the first web host only")
    result = host.run("python3 -c %s %s", HEALTH, f"http://{node.ip}:{APP_PORT}/health/")
    said = [line for line in result.stderr.splitlines() if line.strip()]  # a traceback: its last line says why
    assert result.rc == 0, f"nothing answers http://{node.ip}:{APP_PORT}/health/: {said[-1].strip() if said else 'no output'}"
    assert json.loads(result.stdout) == {"status": 200, "body": {"status": "ok", "db": True}}
