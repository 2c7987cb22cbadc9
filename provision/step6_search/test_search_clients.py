"""Step 6 checks from the web hosts: an account the site creates is found through Haystack on every search server
within SEARCH_DELAY_S (the site indexes it as its change commits), and gone from them once deleted."""

import json
import shlex

import pytest

TIERS = ("web",)
# `lab check`: one line per check, what to try when it fails (lab/workshop.py prints it).
HINTS = {
    "test_a_new_account_is_found_on_every_search_server_then_gone_when_deleted": "search_servers in /etc/bank/bank.d/search.toml; xapian linked into the venv; xapian-tcpsrv up; `manage.py search_catch_up`",
}
MANAGE = "cd /srv/bank/current && sudo -u bank BANK_CONFIG=/etc/bank/bank.toml /srv/bank/venv/bin/python manage.py"
# The site indexes an account as its change commits (accounts.search.AccountSignalProcessor): it is there at once;
# the check allows this much for a busy machine.
SEARCH_DELAY_S = 5.0
# Run on the web host by the site's own manage.py, so through its settings and Haystack connections. One process
# creates (and indexes on commit) an account, each search server is then asked from a second process, which
# proves the server holds it, not this process's memory.
CREATE = """
import json, secrets
from accounts.models import Account, Bank
token = "Probe" + secrets.token_hex(6)
account = Account.objects.create(bank=Bank.objects.order_by("pk").first(), holder=f"Searchcheck {token}", number=token[:20])
print(json.dumps({"pk": account.pk, "token": token}))
"""
FIND = """
import json, sys, time
from django.conf import settings
from haystack.query import SearchQuerySet
from accounts.models import Account
pk, token, present, limit = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "present", float(sys.argv[4])
found = {}
for alias in settings.BANK_SEARCH_ALIASES:
    start = time.monotonic()
    while True:
        hits = {int(r.pk) for r in SearchQuerySet(using=alias).models(Account).auto_query(token)}
        if (pk in hits) == present or time.monotonic() - start > limit:
            break
        time.sleep(0.1)
    found[alias] = {"found": pk in hits, "after_s": round(time.monotonic() - start, 2)}
print(json.dumps(found))
"""
DELETE = """
import sys
from accounts.models import Account
Account.objects.filter(pk=int(sys.argv[1])).delete()
"""


def shell(host, script, *args):
    """The script's last line of output, parsed as JSON, from the site's `manage.py shell` (which takes no arguments
    of its own: they come in as sys.argv[1:])."""
    code = f"import sys; sys.argv[1:] = {list(args)!r}\n{script}"
    result = host.run(f"{MANAGE} shell -v 0 -c {shlex.quote(code)}")
    assert result.rc == 0, result.stderr[-1500:]
    return json.loads(result.stdout.strip().splitlines()[-1]) if result.stdout.strip() else None


def test_a_new_account_is_found_on_every_search_server_then_gone_when_deleted(host, node, lab):
    searches = lab.tier("search") if "search" in lab.stack.tiers else ()
    if not searches:
        pytest.skip("this lab has no search host: the search page queries the database")
    made = shell(host, CREATE)
    try:
        found = shell(host, FIND, str(made["pk"]), made["token"], "present", str(SEARCH_DELAY_S))
        assert len(found) == len(searches), f"the site on {node.name} knows {sorted(found)}, the lab has {len(searches)}"
        assert all(f["found"] for f in found.values()), f"{node.name}: the new account on each search server: {found}"
    finally:
        shell(host, DELETE, str(made["pk"]))
    gone = shell(host, FIND, str(made["pk"]), made["token"], "absent", str(SEARCH_DELAY_S))
    assert not any(f["found"] for f in gone.values()), f"{node.name}: the deleted account is still indexed: {gone}"
