"""Step 5 checks on the web hosts behind the HTTPS balancer: Django's own deployment check finds nothing to warn of."""

from provision.step1_bootstrap.recipes import APP_SERVER_TIERS

TIERS = APP_SERVER_TIERS  # the web hosts, and step 6's api hosts (the same site and app server)
# `lab check`: one line per check, what to try when it fails (lab/workshop.py prints it).
HINTS = {
    "test_check_deploy_reports_no_warning": "on web1 as bank in /srv/bank/current: `BANK_CONFIG=/etc/bank/bank.toml ../venv/bin/python manage.py check --deploy` names each warning",
}
MANAGE = "cd /srv/bank/current && sudo -u bank BANK_CONFIG=/etc/bank/bank.toml /srv/bank/venv/bin/python manage.py"


def test_check_deploy_reports_no_warning(host):
    # --fail-level WARNING: any warning (no HSTS, cookies not Secure, no HTTPS redirect ...) fails it.
    result = host.run(f"{MANAGE} check --deploy --fail-level WARNING")
    assert result.rc == 0, result.stderr.strip().splitlines()[-12:]
    assert "System check identified no issues" in result.stdout
