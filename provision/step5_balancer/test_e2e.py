"""Step 5 end-to-end checks from this machine: the site through the balancer, every web host taking its share."""

import urllib.request

import pytest

TIERS = ("lb",)
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy: lab traffic stays local


def fetch(url):
    with DIRECT.open(url, timeout=10) as response:
        return response.status, dict(response.headers), response.read().decode()


@pytest.fixture
def balancer(node):
    return f"http://{node.ip}"


def test_every_web_host_answers_through_the_balancer(balancer, lab):
    served_by = {fetch(f"{balancer}/hello/")[1].get("X-Served-By") for _ in range(4 * len(lab.tier("web")))}
    assert served_by == {w.name for w in lab.tier("web")}


def test_home_page(balancer):
    status, _, body = fetch(f"{balancer}/")
    assert status == 200
    assert "First Bank of Lawrence" in body


def test_database_backed_balance_sheet(balancer):
    status, headers, body = fetch(f"{balancer}/balance/")
    assert status == 200
    assert "Balance sheet" in body
    assert "Wakarusa Trust" in body


def test_report_page(balancer):
    status, _, body = fetch(f"{balancer}/report/")
    assert status == 200
    assert "Kansas Prairie Savings" in body


def test_static_file_served_by_nginx_itself(balancer):
    status, headers, body = fetch(f"{balancer}/static/accounts/site.css")
    assert status == 200
    assert headers["Content-Type"].startswith("text/css")
    assert "X-Served-By" not in headers  # no web host was involved
    assert body.strip()


def test_debug_is_off_on_unknown_pages(balancer):
    with pytest.raises(urllib.error.HTTPError) as error:
        fetch(f"{balancer}/no-such-page/")
    assert error.value.code == 404
    assert "Django" not in error.value.read().decode()
