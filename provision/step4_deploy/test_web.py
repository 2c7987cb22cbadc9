"""Step 4 checks on the web hosts: a bounded number of releases, and `current` pointing at one of them."""

TIERS = ("web",)


def test_at_most_three_releases_kept(host):
    releases = host.check_output("ls -1 /srv/bank/releases").split()
    assert 1 <= len(releases) <= 3


def test_current_is_one_of_the_releases(host):
    target = host.file("/srv/bank/current").linked_to
    releases = host.check_output("ls -1 /srv/bank/releases").split()
    assert target.rsplit("/", 1)[-1] in releases
