"""Step 4 checks on the web hosts: a bounded number of releases, `current` pointing at one of them, and a deploy log
that names it (deploys are automated, so each one is recorded)."""

from provision.step1_bootstrap.recipes import APP_SERVER_TIERS

TIERS = APP_SERVER_TIERS  # the web hosts, and step 6's api hosts (the same site and app server)
# `lab check`: one line per check, what to try when it fails (lab/workshop.py prints it).
HINTS = {
    "test_at_most_three_releases_kept": "remove old folders of /srv/bank/releases (never the one `current` names), or run `lab deploy`",
    "test_current_is_one_of_the_releases": "`ln -sfn /srv/bank/releases/NAME /srv/bank/current` to a release that exists",
    "test_deploy_log_names_the_current_release": "deploy with `fab deploy` (fabfile.py) or `lab deploy`: each records its release in /srv/bank/deploys.log",
}


def test_at_most_three_releases_kept(host):
    releases = host.check_output("ls -1 /srv/bank/releases").split()
    assert 1 <= len(releases) <= 3


def test_current_is_one_of_the_releases(host):
    target = host.file("/srv/bank/current").linked_to
    releases = host.check_output("ls -1 /srv/bank/releases").split()
    assert target.rsplit("/", 1)[-1] in releases


def test_deploy_log_names_the_current_release(host):
    log = host.file("/srv/bank/deploys.log")
    assert log.exists, "no deploy has been recorded on this host"
    last = log.content_string.strip().splitlines()[-1].split()
    assert last[1] == host.file("/srv/bank/current").linked_to.rsplit("/", 1)[-1]
