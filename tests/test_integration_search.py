"""The search tier (step 6): a lab with lb1, web1, db1 and search1 comes up with `lab test` green (xapian-tcpsrv on
search1's private address, an account made on web1 found on it at once), a second `lab up` changes nothing, and a
customer's search through the balancer is answered from the search server and shows only their own accounts."""

from __future__ import annotations

import os
import re
import ssl
import tomllib

import pytest

from lab.testing import needs_root, scratch_lab
from provision.step5_balancer.test_e2e import Customer

NAME = os.environ.get("TEST_LAB_NAME", "labsearch")  # its own name and subnet: other labs must not matter
pytestmark = pytest.mark.integration

needs_root()

RESULTS = re.compile(r'<table id="search-results" data-source="([^"]*)" data-count="(\d+)">')
FOUND = re.compile(r'class="search-result" data-account="([^"]+)"')


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    with scratch_lab(NAME, range(253, 255), folder=tmp_path_factory.mktemp("search")) as the_lab:
        with open(the_lab.folder / "lab.toml", "a") as config:
            config.write("\n[tiers.web]\ncount = 1\n\n[tiers.db]\ncount = 1\n\n[tiers.search]\ncount = 1\n")
        the_lab.ok("up")
        yield the_lab
    print(f"\nsearch lab seconds per verb: {the_lab.seconds}")


def test_the_search_lab_is_green_and_converged(lab):
    hosts = {h["name"] for h in lab.state["topology"]["hosts"]}
    assert hosts == {"lb1", "web1", "db1", "search1"}
    out = lab.ok("test")
    assert "all checks passed" in out
    again = lab.ok("up")
    assert "no changes" in again, again[-2000:]


def test_a_customer_searches_their_own_accounts_through_the_search_server(lab):
    lb = next(h["ip"] for h in lab.state["topology"]["hosts"] if h["tier"] == "lb")
    password = tomllib.loads((lab.folder / ".lab" / "secrets.toml").read_text())["demo_password"]
    customer = Customer(ssl.create_default_context(cafile=lab.ok("ca").strip()), f"https://{lb}", "customer0001", password)
    own = customer.get("/search/?q=CU0001-1")
    assert RESULTS.search(own).groups() == ("default", "1") and FOUND.findall(own) == ["CU0001-1"], own[-1500:]
    others = customer.get("/search/?q=CU0002-1")  # customer0002's account: in the index, not for customer0001
    assert RESULTS.search(others).groups() == ("default", "0"), others[-1500:]
