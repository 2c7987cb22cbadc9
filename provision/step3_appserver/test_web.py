"""Step 3 checks on the web hosts: Gunicorn enabled, running as the app user, bound to the private IP only."""

import json

TIERS = ("web",)


def test_gunicorn_enabled_and_running(host):
    service = host.service("gunicorn")
    assert service.is_enabled
    assert service.is_running


def test_gunicorn_bound_to_private_ip_only(host, node):
    assert host.socket(f"tcp://{node.ip}:8000").is_listening
    assert not host.socket("tcp://0.0.0.0:8000").is_listening
    assert not host.socket("tcp://127.0.0.1:8000").is_listening


def test_gunicorn_runs_as_the_app_user(host):
    workers = host.process.filter(comm="gunicorn")
    assert workers, "no gunicorn processes"
    assert {p.user for p in workers} == {"bank"}


def test_health_reports_the_database_reachable(host, node):
    body = host.check_output(
        f"python3 -c \"import urllib.request; print(urllib.request.urlopen('http://{node.ip}:8000/health/', timeout=5).read().decode())\""
    )
    assert json.loads(body) == {"status": "ok", "db": True}


def test_static_files_collected_with_manifest(host):
    assert host.file("/srv/bank/static/staticfiles.json").exists
    assert host.file("/srv/bank/static/accounts/site.css").exists
