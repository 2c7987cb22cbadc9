"""Step 1 checks on the web hosts: the app user, the venv with the pinned Django 5.2 on Python 3.11, the release."""

import re

TIERS = ("web",)


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


def test_current_release_holds_the_site(host):
    current = host.file("/srv/bank/current")
    assert current.is_symlink
    assert current.linked_to.startswith("/srv/bank/releases/")
    assert host.file(f"{current.linked_to}/manage.py").exists
