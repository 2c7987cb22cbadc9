"""Step 6 checks of the JSON API: the app server answers on each api host; through each balancer (to the api hosts, or
to the web hosts on a lab without any) a customer's token gets their accounts, no token gets 401, and a burst beyond
the per-client allowance gets 429 while another client is still served."""

import collections
import http.client
import json
import shlex
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from lab.hostcheck import get_host
from lab.tls import ca_paths
from provision.step1_bootstrap.recipes import APP_PORT, APP_USER, manage
from provision.step3_appserver.recipes import HEALTH_PATH
from provision.step5_balancer.recipes import API_BURST, API_PATH, API_RATE_PER_SECOND, HTTPS_PORT

TIERS = ("api", "lb")
# `lab check`: one line per check, what to try when it fails (lab/workshop.py prints it).
HINTS = {
    "test_the_app_server_answers_on_the_api_host": "`lab ssh api1 systemctl status gunicorn`; api1's /etc/bank/bank.toml; `lab ssh api1 curl -s http://<api1's IP>:8000/health/`",
    "test_a_customers_token_gets_their_accounts_through_the_balancer": "a token from `manage.py api_token customer0001`, then `curl -H 'Authorization: Bearer <token>'` lb1's /api/accounts/ (docs/api.md)",
    "test_no_token_is_401": "the API's views answer 401 without `Authorization: Bearer <token>` (app/accounts/api.py); a 404 means the release predates the API: `lab deploy`",
    "test_a_burst_beyond_the_allowance_is_429_for_that_client_only": "lb1's `limit_req_zone $bank_api_client zone=bank_api`; in `location /api/`: `limit_req zone=bank_api burst=40 nodelay;` + `limit_req_status 429;`",
}
CUSTOMER = "customer0001"  # made by step 2's sample data, with two accounts CU0001-*
TOKEN_NAME = "lab-check"  # replaced on every run, revoked after it
REQUEST_TIMEOUT_S = 60  # the stack's own request timeout: a busy machine answers late, not wrongly
# Twice the burst and a second's allowance more, all sent at once: whatever the app servers' speed, nginx counts them
# on arrival, so about half are over the allowance.
BURST_REQUESTS = 2 * API_BURST + API_RATE_PER_SECOND
# From the host itself (its firewall lets in the balancer only): the site's health page, as the balancer asks it.
HEALTH = ("import json, sys, urllib.request\n"
          "opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))\n"
          "with opener.open(sys.argv[1], timeout=30) as response:\n"
          "    print(json.dumps({'status': response.status, 'body': json.loads(response.read())}))\n")


def site_host(lab):
    """Where the API's tokens are made: an api host, else the first web host (one database behind them all)."""
    api = lab.tier("api") if "api" in lab.stack.tiers else ()
    return (api or lab.tier("web"))[0]


def serving_the_api(lab):
    """The hosts the balancer sends /api/ to while all is well: the api hosts, or the web hosts on a lab without any."""
    api = lab.tier("api") if "api" in lab.stack.tiers else ()
    return {h.name for h in (api or lab.tier("web"))}


def api_token_command(*arguments):
    return f"sudo -u {APP_USER} sh -c {shlex.quote(manage('api_token ' + ' '.join(map(shlex.quote, arguments))))}"


@pytest.fixture(scope="module")
def token(lab, labdir):
    """A fresh token of customer0001's (never printed: a failure names the customer, not the token)."""
    maker = get_host(labdir, site_host(lab).name)
    made = maker.run(api_token_command(CUSTOMER, "--name", TOKEN_NAME))
    assert made.rc == 0, f"manage.py api_token on {site_host(lab).name}: {made.stderr.strip()[-300:]}"
    user, secret = made.stdout.strip().splitlines()[-1].split(" ", 1)
    assert user == CUSTOMER
    yield secret
    maker.run(api_token_command(CUSTOMER, "--name", TOKEN_NAME, "--revoke"))


@pytest.fixture(scope="module")
def tls_context(labdir):
    return ssl.create_default_context(cafile=str(ca_paths(labdir.path)[0]))


def get(node, tls_context, path, token=None):
    """(status, headers, parsed JSON body) of one GET to this balancer, on a connection of its own."""
    connection = http.client.HTTPSConnection(node.ip, HTTPS_PORT, context=tls_context, timeout=REQUEST_TIMEOUT_S)
    try:
        connection.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read() or b"null")
    finally:
        connection.close()


def test_the_app_server_answers_on_the_api_host(host, node):
    if node.tier != "api":
        pytest.skip("an api host's own check")
    result = host.run("python3 -c %s %s", HEALTH, f"http://{node.ip}:{APP_PORT}{HEALTH_PATH}")
    said = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.rc == 0, f"nothing answers on {node.name}:{APP_PORT}: {said[-1].strip() if said else 'no output'}"
    assert json.loads(result.stdout) == {"status": 200, "body": {"status": "ok", "db": True}}


def test_a_customers_token_gets_their_accounts_through_the_balancer(node, lab, token, tls_context):
    if node.tier != "lb":
        pytest.skip("asked through each balancer")
    status, headers, body = get(node, tls_context, f"{API_PATH}accounts/", token)
    assert status == 200, f"GET {API_PATH}accounts/ as {CUSTOMER} through {node.name}: {status} {body}"
    numbers = [a["number"] for a in body["accounts"]]
    assert len(numbers) == 2 and all(n.startswith("CU0001-") for n in numbers), numbers
    assert headers.get("X-Served-By") in serving_the_api(lab), headers.get("X-Served-By")


def test_no_token_is_401(node, tls_context):
    if node.tier != "lb":
        pytest.skip("asked through each balancer")
    status, headers, body = get(node, tls_context, f"{API_PATH}accounts/")
    assert status == 401 and "error" in body, (status, body)
    assert headers.get("WWW-Authenticate") == 'Bearer realm="bank"'


def test_a_burst_beyond_the_allowance_is_429_for_that_client_only(node, token, tls_context):
    if node.tier != "lb":
        pytest.skip("asked through each balancer")
    ready = threading.Barrier(BURST_REQUESTS, timeout=REQUEST_TIMEOUT_S)

    def one():
        # Connected (TLS included) first, then all sent together: the burst arrives as one.
        connection = http.client.HTTPSConnection(node.ip, HTTPS_PORT, context=tls_context, timeout=REQUEST_TIMEOUT_S)
        try:
            connection.connect()
            ready.wait()
            connection.request("GET", f"{API_PATH}accounts/", headers={"Authorization": f"Bearer {token}"})
            response = connection.getresponse()
            return response.status, response.getheader("Content-Type"), response.read()
        finally:
            connection.close()

    with ThreadPoolExecutor(BURST_REQUESTS) as pool:
        answers = list(pool.map(lambda _: one(), range(BURST_REQUESTS)))
    statuses = collections.Counter(status for status, _, _ in answers)
    assert set(statuses) <= {200, 429}, dict(statuses)
    assert statuses[429] and statuses[200] >= API_BURST // 2, \
        f"{BURST_REQUESTS} requests at once, allowance {API_RATE_PER_SECOND}/s burst {API_BURST}: {dict(statuses)}"
    limited = next(body for status, _, body in answers if status == 429)
    assert "rate limited" in json.loads(limited)["error"]
    # Another client (no token: keyed by address) is not held to this one's allowance.
    assert get(node, tls_context, f"{API_PATH}accounts/")[0] == 401
