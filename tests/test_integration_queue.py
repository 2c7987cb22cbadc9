"""The queue tier on a real lab (web1, db1, q1): `lab up` converges it, every check passes (Redis on q1 asking for
the password, the worker answering a ping, a statement asked for on web1 prepared by q1's worker), the statement
page says "being prepared" then shows it through the balancer, and a second `lab up` changes nothing."""

from __future__ import annotations

import http.cookiejar
import os
import re
import time
import urllib.parse
import urllib.request

import pytest

from lab.testing import needs_root, scratch_lab

NAME = os.environ.get("TEST_LAB_NAME", "labqueue")
pytestmark = pytest.mark.integration

needs_root()

CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
STATUS = re.compile(r'id="statement" data-status="(\w+)" data-prepared-by="([\w-]*)"')
READY_WITHIN_S = 30


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    with scratch_lab(NAME, range(245, 249), folder=tmp_path_factory.mktemp("queue")) as lab:
        with open(lab.folder / "lab.toml", "a") as config:
            config.write("\n[tiers.q]\ncount = 1\n")
        lab.ok("up")
        yield lab


def test_the_lab_passes_every_check_with_a_queue(lab):
    output = lab.ok("test")
    assert " passed" in output and " failed" not in output


def test_a_statement_asked_for_through_the_balancer_is_prepared_by_q1(lab):
    url, opener = lab.site()
    jar = http.cookiejar.CookieJar()
    opener.add_handler(urllib.request.HTTPCookieProcessor(jar))
    creds = lab.ok("creds")
    user = next(line.split()[-1] for line in creds.splitlines() if line.startswith("user:"))
    password = next(line.split()[-1] for line in creds.splitlines() if line.startswith("password:"))

    def post(path: str, fields: dict[str, str]):
        page = opener.open(url + path, timeout=30).read().decode()
        data = urllib.parse.urlencode({"csrfmiddlewaretoken": CSRF.search(page).group(1), **fields}).encode()
        request = urllib.request.Request(url + path, data, headers={"Referer": url + path})
        return opener.open(request, timeout=30)

    post("/accounts/login/", {"username": user, "password": password})
    answer = post("/statements/", {})
    statement_url = answer.geturl()
    assert re.search(r"/statements/\d+/$", statement_url), statement_url
    deadline = time.monotonic() + READY_WITHIN_S
    while True:
        status, prepared_by = STATUS.search(opener.open(statement_url, timeout=30).read().decode()).groups()
        if status != "pending" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert (status, prepared_by) == ("ready", "q1")


def test_a_second_up_changes_nothing(lab):
    assert "no changes" in lab.ok("up")
