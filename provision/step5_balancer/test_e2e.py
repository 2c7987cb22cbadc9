"""Step 5 end-to-end checks from this machine: the site through the balancer over HTTPS (verified against the lab's
CA), plain HTTP redirected, every web host taking its share, "shared nothing" (no web process keeps its own balance
sheet, no request hands state to the next through a host's files), two customers who cannot see or move each other's
money, login attempts rate limited."""

import concurrent.futures
import http.cookiejar
import re
import secrets
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from lab.tls import ca_paths

TIERS = ("lb",)
# A login hashes a password (PBKDF2, Django's default cost): a second natively, well over ten on an emulated VM.
REQUEST_TIMEOUT_S = 60
ACCOUNT = re.compile(r'data-account="([^"]+)" data-balance="([^"]+)"')
OPTION = re.compile(r'<option value="([^"]+)"')
CONFIRMATION = re.compile(r'id="transfer-confirmation" data-transfer-id="\d+" data-from="([^"]+)" '
                          r'data-from-balance="([^"]+)" data-to="([^"]+)" data-to-balance="([^"]+)"')
SHEET_AGE = re.compile(r'id="sheet-age" data-age="([0-9.]+)" data-cache-seconds="(\d+)"')
# The cache's own expiry rounds to the second (memcached); a request takes a moment too.
SHEET_AGE_SLACK_S = 2

# `lab check`: one line per check, what to try when it fails (lab/workshop.py prints it).
HINTS = {
    "test_every_web_host_answers_through_the_balancer": "list every web host in nginx's upstream on lb1 and `systemctl reload nginx`",
    "test_home_page": "`curl -i --cacert \"$(lab ca)\" https://<lb1's IP>/`: 502: no app server reached, 400: ALLOWED_HOSTS, no HSTS: no X-Forwarded-Proto",
    "test_plain_http_redirects_to_https": "a `listen <lb1's IP>:80;` server with `return 301 https://$host$request_uri;`; `curl -i http://<lb1's IP>/` shows it",
    "test_plain_http_never_redirects_to_a_host_the_client_named": "a `default_server` on port 80 with `return 400;` beside the server whose `server_name` is lb1's name and IP",
    "test_the_plain_bench_port_serves_the_bench_page_only": "lb1's port 8080 server: `location = /hello/` proxied, `location / { return 404; }`; `curl -i http://<lb1's IP>:8080/accounts/login/`",
    "test_tls_1_3_and_1_2_verified_against_the_lab_ca": "`ssl_protocols TLSv1.2 TLSv1.3;` and lab's certificate; `openssl s_client -connect <lb1's IP>:443 -CAfile \"$(lab ca)\"`",
    "test_database_backed_balance_sheet": "`curl -i --cacert \"$(lab ca)\" https://<lb1's IP>/balance/`; is the sample data loaded (step 2)?",
    "test_report_page_publishes_bank_totals_only": "`curl --cacert \"$(lab ca)\" https://<lb1's IP>/report/?format=csv`: bank totals only; `lab ssh web1 journalctl -u gunicorn`",
    "test_no_web_process_serves_a_balance_sheet_older_than_its_cache_allows": "a global is never recomputed (\"global variables are right out\"): keep the sheet in Django's cache; or `lab demo shared-nothing --undo`",
    "test_a_report_generated_through_the_balancer_reads_back_on_every_web_host": "/tmp/report.txt is on one web host only (\"Filesystem? What filesystem?\"): pass the report's name in the redirect; or `lab demo shared-nothing --undo`",
    "test_two_customers_see_only_their_own_accounts": "sign in as customer0001 (`lab creds`) at https://<lb1's IP>/balance/: only CU0001-* accounts; app/ filters by user",
    "test_a_customer_cannot_move_anothers_money": "the transfer form must offer and accept only the signed-in customer's accounts (app/ is the lab's: redeploy it, `lab deploy`)",
    "test_a_customer_moves_their_own_money_through_the_balancer": "sign in (`lab creds`), transfer 0.01 at https://<lb1's IP>/transfer/; a 403 is CSRF: needs X-Forwarded-Proto https",
    "test_login_attempts_are_rate_limited": "`limit_req_zone` for POSTs and `limit_req zone=bank_login` + `limit_req_status 429;` in lb1's /accounts/login/ location",
}
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy: lab traffic stays local


class NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


@pytest.fixture(scope="module")
def ca_file(labdir):
    return str(ca_paths(labdir.path)[0])


@pytest.fixture(scope="module")
def tls_context(ca_file):
    return ssl.create_default_context(cafile=ca_file)


def opener(tls_context, *handlers):
    # Never through a proxy: lab traffic stays local.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=tls_context),
                                       *handlers)


@pytest.fixture(scope="module")
def fetch(tls_context):
    direct = opener(tls_context)

    def get(url):
        with direct.open(url, timeout=REQUEST_TIMEOUT_S) as response:
            return response.status, dict(response.headers), response.read().decode()
    return get


@pytest.fixture
def balancer(node):
    return f"https://{node.ip}"


class Customer:
    """A browser of one customer: cookies, the CSRF token of each form, a Referer on each POST (as Django wants over
    HTTPS)."""

    def __init__(self, tls_context, site, username, password):
        self.site, self.username = site, username
        cookies = urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        self.browser = opener(tls_context, cookies)
        self.no_follow = opener(tls_context, cookies, NoRedirects)
        status, page = self.post("/accounts/login/", {"username": username, "password": password})
        assert status == 200 and 'name="password"' not in page, f"{username} could not sign in"

    def get(self, path):
        with self.browser.open(self.site + path, timeout=REQUEST_TIMEOUT_S) as response:
            return response.read().decode()

    def fetch(self, path):
        """(status, headers, body) of a GET, an HTTP error's too; the redirect a POST left named the path."""
        try:
            with self.browser.open(self.site + path, timeout=REQUEST_TIMEOUT_S) as response:
                return response.status, response.headers, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, ""

    def post_no_follow(self, path, data):
        """A form's POST whose redirect is not followed: (status, Location)."""
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', self.get(path)).group(1)
        body = urllib.parse.urlencode({**data, "csrfmiddlewaretoken": token}).encode()
        request = urllib.request.Request(self.site + path, body, headers={"Referer": self.site + path})
        try:
            with self.no_follow.open(request, timeout=REQUEST_TIMEOUT_S) as response:
                return response.status, None
        except urllib.error.HTTPError as error:
            return error.code, error.headers.get("Location")

    def post(self, path, data):
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', self.get(path)).group(1)
        body = urllib.parse.urlencode({**data, "csrfmiddlewaretoken": token}).encode()
        request = urllib.request.Request(self.site + path, body, headers={"Referer": self.site + path})
        with self.browser.open(request, timeout=REQUEST_TIMEOUT_S) as response:
            return response.status, response.read().decode()

    def accounts(self):
        return dict(ACCOUNT.findall(self.get("/balance/")))


@pytest.fixture(scope="module")
def customers(tls_context, lab, labdir):
    # customer0001 and customer0002 are made by step 2 with the lab's demo password.
    site = f"https://{lab.site_address}"  # a balancer pair's floating address, or the one balancer's
    password = labdir.secrets()["demo_password"]
    return Customer(tls_context, site, "customer0001", password), Customer(tls_context, site, "customer0002", password)


def test_every_web_host_answers_through_the_balancer(balancer, lab, fetch):
    served_by = {fetch(f"{balancer}/hello/")[1].get("X-Served-By") for _ in range(4 * len(lab.tier("web")))}
    assert served_by == {w.name for w in lab.tier("web")}


def test_home_page(balancer, fetch):
    status, headers, body = fetch(f"{balancer}/")
    assert status == 200
    assert "First Bank of Lawrence" in body
    assert headers["Strict-Transport-Security"].startswith("max-age=31536000")


def test_plain_http_redirects_to_https(node, tls_context):
    with pytest.raises(urllib.error.HTTPError) as redirect:
        opener(tls_context, NoRedirects).open(f"http://{node.ip}/report/?format=csv", timeout=REQUEST_TIMEOUT_S)
    assert redirect.value.code == 301
    assert redirect.value.headers["Location"] == f"https://{node.ip}/report/?format=csv"


def test_plain_http_never_redirects_to_a_host_the_client_named(node, tls_context):
    request = urllib.request.Request(f"http://{node.ip}/", headers={"Host": "elsewhere.example"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        opener(tls_context, NoRedirects).open(request, timeout=REQUEST_TIMEOUT_S)
    assert refused.value.code == 400, refused.value.headers.get("Location")


def test_the_plain_bench_port_serves_the_bench_page_only(node, lab, tls_context):
    # `lab bench --scheme http` measures /hello/ without TLS; nothing that signs in or shows an account may go in clear.
    plain = f"http://{node.ip}:{lab.port('http-plain')}"
    with opener(tls_context, NoRedirects).open(f"{plain}/hello/", timeout=REQUEST_TIMEOUT_S) as response:
        assert response.status == 200
    for path in ("/accounts/login/", "/admin/login/", "/balance/", "/transfer/", "/"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            opener(tls_context, NoRedirects).open(f"{plain}{path}", timeout=REQUEST_TIMEOUT_S)
        assert refused.value.code == 404, path


def test_tls_1_3_and_1_2_verified_against_the_lab_ca(node, tls_context, ca_file):
    only_1_2 = ssl.create_default_context(cafile=ca_file)
    only_1_2.maximum_version = ssl.TLSVersion.TLSv1_2
    for context, version in ((tls_context, "TLSv1.3"), (only_1_2, "TLSv1.2")):
        with socket.create_connection((node.ip, 443), timeout=REQUEST_TIMEOUT_S) as raw:
            with context.wrap_socket(raw, server_hostname=node.ip) as connection:
                assert connection.version() == version


def test_database_backed_balance_sheet(balancer, fetch):
    status, headers, body = fetch(f"{balancer}/balance/")
    assert status == 200
    assert "Balance sheet" in body
    assert "Wakarusa Trust" in body


def test_report_page_publishes_bank_totals_only(balancer, fetch):
    status, _, body = fetch(f"{balancer}/report/")
    assert status == 200
    assert "Kansas Prairie Savings" in body
    assert "Top 10 accounts" not in body and "AC00" not in body and "CU0" not in body
    status, _, csv = fetch(f"{balancer}/report/?format=csv")
    assert csv.splitlines()[0] == "bank,accounts,total"


def test_no_web_process_serves_a_balance_sheet_older_than_its_cache_allows(balancer, lab, fetch):
    # The seed's "Global variables are right out": a sheet kept in a module global is computed once per process and
    # never again, so it grows older than any cache timeout; through Django's cache no copy outlives the timeout.
    served = []
    for _ in range(8 * len(lab.tier("web"))):
        status, headers, body = fetch(f"{balancer}/balance/")
        age, limit = SHEET_AGE.search(body).groups()
        served.append((headers.get("X-Served-By"), float(age)))
    too_old: dict[str, list[float]] = {}
    for host, age in served:
        if age > int(limit) + SHEET_AGE_SLACK_S:
            too_old.setdefault(host, []).append(age)
    assert not too_old, f"balance sheets older than the cache's {limit} s: " + ", ".join(
        f"{host} {len(ages)} of {sum(1 for h, _ in served if h == host)} (up to {max(ages):.0f} s)"
        for host, ages in sorted(too_old.items()))


def test_a_report_generated_through_the_balancer_reads_back_on_every_web_host(customers, lab):
    # The seed's "Filesystem? What filesystem?": a report one request writes to /tmp and the next reads is on one web
    # host only; the balancer sends the next request wherever it likes.
    a, _ = customers
    name = f"check-{secrets.token_hex(4)}"
    status, location = a.post_no_follow("/report/generate/", {"name": name})
    assert status == 302 and location, f"generating a report answered {status}"
    path = urllib.parse.urlsplit(location)._replace(scheme="", netloc="").geturl()
    reads = [a.fetch(path) for _ in range(4 * len(lab.tier("web")))]
    wrong = [f"{headers.get('X-Served-By')}: {status} {headers.get('X-Report-Name')!r}" for status, headers, _ in reads
             if status != 200 or headers.get("X-Report-Name") != name]
    assert not wrong, f"report {name!r} read back through the balancer as: {'; '.join(sorted(set(wrong)))}"
    assert {headers.get("X-Served-By") for _, headers, _ in reads} == {w.name for w in lab.tier("web")}


def test_two_customers_see_only_their_own_accounts(customers):
    a, b = customers
    assert set(a.accounts()) == {"CU0001-1", "CU0001-2"}
    assert set(b.accounts()) == {"CU0002-1", "CU0002-2"}
    assert OPTION.findall(a.get("/transfer/")) == ["CU0001-1", "CU0001-2"] * 2  # From, then To


def test_a_customer_cannot_move_anothers_money(customers):
    a, b = customers
    before = b.accounts()
    for forged in ({"from_account": "CU0002-1", "to_account": "CU0001-1"},
                   {"from_account": "CU0001-1", "to_account": "CU0002-1"}):
        status, page = a.post("/transfer/", {**forged, "amount": "1.00"})
        assert status == 200 and "Select a valid choice" in page and "Transferred" not in page
    assert b.accounts() == before


def test_a_customer_moves_their_own_money_through_the_balancer(customers):
    a, _ = customers
    for source, target in (("CU0001-1", "CU0001-2"), ("CU0001-2", "CU0001-1")):  # a cent there and back
        status, page = a.post("/transfer/", {"from_account": source, "to_account": target, "amount": "0.01"})
        assert status == 200 and "Transferred 0.01" in page
        confirmed = CONFIRMATION.search(page)
        assert confirmed and (confirmed.group(1), confirmed.group(3)) == (source, target)


def test_login_attempts_are_rate_limited(balancer, tls_context):
    # Sent 30 at a time, so they arrive faster than the zone's rate however slowly this lab's hosts answer (one by one,
    # a VM answering in more than 1/rate seconds would never be limited): the burst reaches Django, the rest do not.
    def attempt(_) -> tuple[int, str | None]:
        try:
            opener(tls_context).open(urllib.request.Request(f"{balancer}/accounts/login/", b"username=x&password=y"),
                                     timeout=REQUEST_TIMEOUT_S)
        except urllib.error.HTTPError as error:  # no CSRF token: Django refuses each (403) unless the balancer did (429)
            return error.code, error.headers.get("X-Served-By")
        return 200, None

    with concurrent.futures.ThreadPoolExecutor(max_workers=30) as pool:
        answers = list(pool.map(attempt, range(60)))
    codes = sorted(code for code, _ in answers)
    assert set(codes) == {403, 429}, codes
    assert all(served_by is None for code, served_by in answers if code == 429)  # no web host saw them
    time.sleep(5)  # the bucket refills before whatever uses the site next
