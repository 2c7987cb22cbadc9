"""Unit tests for the api tier (provision/step6_api): its place in the stack and the full preset, the firewall, pg_hba,
settings and balancer its links give (real recipes on recording hosts), nginx's /api/ upstream and per-client limit
with and without api hosts, rolling restarts that never drain a web host onto api hosts, the connection budget, and
`lab bench --scenario api`."""
from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest

from lab import stack as stacks
from lab.bench import API_SCENARIO, LOADTESTS, SCENARIOS, BenchRequest, _check_bench_request, _serving_the_scenario
from lab.bench import money
from lab.errors import TopologyError, UsageError
from lab.remote import CommandResult
from lab.testing import linux_topology
from lab.topology import Overrides
from provision.step1_bootstrap.recipes import APP_PORT, APP_SERVER_TIERS, SITE_TIERS
from provision.step5_balancer import recipes as step5
from provision.step5_pooler.recipes import POOLED_TIERS
from provision.step6_api import API_PURPOSE, MAX_API_HOSTS
from provision.step6_api import APP_PORT as API_APP_PORT
from tests.test_unit_links import MACHINE_IP, firewall, pg_hba_addresses, provision, site_settings, upstream

API_LAB = linux_topology(overrides=Overrides(web=2, counts={"api": 2}))  # lb1, web1..2, db1, api1..2
NO_API = linux_topology(overrides=Overrides(web=2))
PROJECT = SimpleNamespace(labdir=None)  # what money.api_tokens asks of a project here: its labdir, for connect
NGINX = "step5_balancer/templates/nginx-bank.conf.j2"


def nginx_site(templates, topology, answering=None, down=frozenset()):
    answering = {h.name for h in step5.balanced_hosts(topology)} if answering is None else answering
    lb = topology.tier("lb")[0]
    return templates.get_template(NGINX).render(
        host=lb, topology=topology,
        **step5.site_values(addresses=topology.addresses(lb), **step5.site_servers(topology, answering, down)))


def block(text, opening):
    """The body of the block that starts with `opening` (e.g. "upstream bank_api", "location /api/")."""
    found = re.search(rf"^\s*{re.escape(opening)} \{{(.*?)^\s*\}}", text, re.S | re.M)
    return found.group(1) if found else None


def servers(text, upstream_name):
    return re.findall(r"^\s*server (\S+) (.*?);  # (\S+)$", block(text, f"upstream {upstream_name}") or "", re.M)


# -- the tier in the stack ---------------------------------------------------------------------------------------


def test_the_api_tier_is_optional_runs_the_app_server_and_is_in_the_full_preset_only():
    spec = stacks.current().tiers["api"]
    assert (spec.ip_offset, spec.min_count, spec.default_count, spec.max_count) == (70, 0, 0, MAX_API_HOSTS)
    assert spec.services == (stacks.APP_SERVER_UNIT,)
    assert spec.memory_mb == stacks.current().tiers["web"].memory_mb  # the same site under the same app server
    assert [h.name for h in linux_topology(overrides=Overrides(preset="full")).tier("api")] == ["api1"]
    for preset in ("minimal", "workshop", "tuned"):
        assert not linux_topology(overrides=Overrides(preset=preset)).tier("api")
    assert [(h.name, h.ip) for h in API_LAB.tier("api")] == [("api1", "192.168.56.71"), ("api2", "192.168.56.72")]
    with pytest.raises(TopologyError, match=r"--api must be from 0 to 4 \(got 5\)"):
        linux_topology(overrides=Overrides(counts={"api": 5}))


def test_api_hosts_run_the_sites_code_app_server_and_pooler_like_web_hosts():
    assert APP_SERVER_TIERS == ("web", "api") and set(SITE_TIERS) == {"web", "api", "q"}
    assert POOLED_TIERS == APP_SERVER_TIERS
    assert API_APP_PORT == APP_PORT


def test_the_links_of_the_api_tier():
    links = {(l.source, l.target, l.port, l.purpose) for l in stacks.current().links if "api" in (l.source, l.target)}
    assert links == {("lb", "api", 8000, API_PURPOSE), ("api", "db", 5432, "sql"), ("api", "cache", 11211, "cache"),
                     ("monitor", "api", 8000, "app-probe")}  # monitor1 asks its /health/ as it asks the web hosts'
    assert [h.name for h in API_LAB.serving("api")] == ["api1", "api2"]
    assert [h.name for h in API_LAB.serving("app")] == ["web1", "web2"]  # the site's pages stay on the web hosts


# -- what the links write, through the real recipes ---------------------------------------------------------------


@pytest.fixture(scope="module")
def api_files():
    return provision(API_LAB)


def test_api_hosts_take_the_app_port_from_the_balancer_only(api_files):
    for name in ("api1", "api2"):
        assert firewall(api_files[name]) == {22: ("ssh", {MACHINE_IP}), 8000: ("api", {"192.168.56.11"})}


def test_the_database_admits_the_api_hosts(api_files):
    assert pg_hba_addresses(api_files["db1"]) == [
        "192.168.56.21/32", "192.168.56.22/32", "192.168.56.71/32", "192.168.56.72/32"]
    rules = re.findall(r"^\s*tcp dport 5432 ip saddr \{ (.*?) \} accept  # sql$", api_files["db1"]["/etc/nftables.conf"], re.M)
    assert rules == ["192.168.56.21, 192.168.56.22", "192.168.56.71, 192.168.56.72"]  # one rule per link


def test_an_api_hosts_site_believes_the_balancer_and_uses_the_database(api_files):
    settings = site_settings(api_files["api1"])
    assert settings["allowed_hosts"] == ["192.168.56.11", "lb1", "192.168.56.71", "api1", "localhost"]
    assert settings["trusted_proxies"] == ["192.168.56.11"]
    assert (settings["db_host"], settings["db_port"]) == ("192.168.56.31", 5432)


def test_the_balancer_sends_api_to_the_api_hosts_and_the_rest_to_the_web_hosts(api_files):
    site = api_files["lb1"][step5.SITE]
    assert upstream(api_files["lb1"]) == ["192.168.56.21:8000", "192.168.56.22:8000"]
    assert [(a, p, n) for a, p, n in servers(site, "bank_api")] == [
        ("192.168.56.71:8000", step5.SERVER_PARAMETERS, "api1"), ("192.168.56.72:8000", step5.SERVER_PARAMETERS, "api2"),
        ("192.168.56.21:8000", f"{step5.SERVER_PARAMETERS} backup", "web1"),
        ("192.168.56.22:8000", f"{step5.SERVER_PARAMETERS} backup", "web2")]
    api = block(site, "location /api/")
    assert "proxy_pass http://bank_api;" in api and "proxy_next_upstream_tries 4;" in api
    assert "proxy_pass http://bank_web;" in block(site, "location /")


# -- nginx's /api/: the limit, and a lab without api hosts ---------------------------------------------------------


def test_api_requests_are_limited_per_token_else_per_address(templates):
    text = nginx_site(templates, API_LAB)
    mapping = block(text, "map $http_authorization $bank_api_client")
    assert re.search(r'"~\*\^bearer\\s\+\(\?<token>\\S\+\)\$"\s+\$token;', mapping)
    assert re.search(r"default\s+\$binary_remote_addr;", mapping)
    assert "limit_req_zone $bank_api_client zone=bank_api:10m rate=20r/s;" in text
    api = block(text, "location /api/")
    assert "limit_req zone=bank_api burst=40 nodelay;" in api and "limit_req_status 429;" in api
    assert "error_page 429 = @bank_api_limited;" in api
    limited = block(text, "location @bank_api_limited")
    assert "return 429 '{\"error\": \"rate limited: at most 20r/s per client, bursts of 40\"}\\n';" in limited
    assert "default_type application/json;" in limited and "add_header Retry-After 1 always;" in limited
    body = re.search(r"return 429 '(.*)\\n';", limited).group(1)
    assert json.loads(body)["error"].startswith("rate limited")
    assert text.count("limit_req zone=bank_login") == 2  # the login limit is untouched


def test_without_api_hosts_the_web_hosts_serve_api_still_limited(templates):
    text = nginx_site(templates, NO_API)
    assert block(text, "upstream bank_api") is None and "bank_api;" not in text.replace("zone=bank_api", "")
    api = block(text, "location /api/")
    assert "proxy_pass http://bank_web;" in api and "limit_req zone=bank_api burst=40 nodelay;" in api


def test_an_api_host_that_does_not_answer_is_left_out_and_a_drained_one_marked_down(templates):
    text = nginx_site(templates, API_LAB, answering={"web1", "web2", "api2"}, down=frozenset({"web2"}))
    assert [(n, p) for _, p, n in servers(text, "bank_api")] == [
        ("api2", step5.SERVER_PARAMETERS), ("web1", f"{step5.SERVER_PARAMETERS} backup"), ("web2", "down")]
    assert [(n, p) for _, p, n in servers(text, "bank_web")] == [("web1", step5.SERVER_PARAMETERS), ("web2", "down")]


def test_no_api_host_answering_lists_them_all_nginx_needs_a_server():
    listed = step5.site_servers(API_LAB, {"web1"}, frozenset())["api_servers"]
    assert [s["name"] for s in listed] == ["api1", "api2", "web1"]


def test_a_restart_drains_a_host_onto_the_hosts_that_serve_what_it_serves():
    one_web = linux_topology(overrides=Overrides(counts={"api": 1}))
    # web1 alone serves the site's pages: it restarts in place, never drained onto api1 (which serves /api/ only)
    assert [h.name for h in step5._peers(one_web, one_web.host("web1"))] == ["web1"]
    # api1 alone serves /api/: drained onto the web hosts, its upstream's backups
    assert [h.name for h in step5._peers(one_web, one_web.host("api1"))] == ["api1", "web1"]
    assert [h.name for h in step5.balanced_hosts(API_LAB)] == ["web1", "web2", "api1", "api2"]


# -- the connection budget counts the api hosts ------------------------------------------------------------------


def test_the_connection_budget_counts_web_and_api_hosts():
    with pytest.raises(TopologyError, match=r"connection budget: 13 web and api hosts × pgbouncer pool_size 10 \+ 10 "
                                            r"reserved = 140 > db max_connections 100"):
        linux_topology({"db": {"pooler": "pgbouncer"}}, overrides=Overrides(web=9, counts={"api": 4}))
    assert linux_topology({"db": {"pooler": "pgbouncer"}}, overrides=Overrides(web=5, counts={"api": 4})).count("api") == 4


# -- lab bench --scenario api ---------------------------------------------------------------------------------------


def test_the_api_scenario_exists_paces_below_the_limit_and_refuses_wrk_and_plain_http():
    assert (LOADTESTS / SCENARIOS[API_SCENARIO]).is_file()
    default_rate = re.search(r'LAB_API_RATE", "(\d+)"', (LOADTESTS / SCENARIOS[API_SCENARIO]).read_text()).group(1)
    assert float(default_rate) < step5.API_RATE_PER_SECOND  # a user's own pace never meets its token's allowance
    with pytest.raises(UsageError, match="--reference-wrk has no page to measure for the api scenario"):
        _check_bench_request(BenchRequest(scenario="api", reference_wrk=True))
    with pytest.raises(UsageError, match="--scheme http cannot run the api scenario"):
        _check_bench_request(BenchRequest(scenario="api", schemes=("http",)))
    _check_bench_request(BenchRequest(scenario="api"))


def test_the_api_scenario_reports_the_api_hosts_shares_or_the_web_hosts():
    assert [h.name for h in _serving_the_scenario(API_LAB, "api")] == ["api1", "api2"]
    assert [h.name for h in _serving_the_scenario(NO_API, "api")] == ["web1", "web2"]
    assert [h.name for h in _serving_the_scenario(API_LAB, "mix")] == ["web1", "web2"]


class TokenHost:
    name = "web1"

    def __init__(self, stdout):
        self.stdout, self.commands = stdout, []

    def run(self, command, user=None, stdin=None):
        self.commands.append((command, user))
        return CommandResult(command, 0, self.stdout, "")

    def close(self):
        pass


def test_the_bench_makes_one_token_per_customer(monkeypatch):
    monkeypatch.setattr(money, "running_lab", lambda project: ({}, NO_API))
    host = TokenHost("customer0001 bank_a\ncustomer0002 bank_b\n")
    assert money.api_tokens(PROJECT, 2, "lab-bench", connect=lambda labdir, name: host) == {
        "customer0001": "bank_a", "customer0002": "bank_b"}
    command, user = host.commands[0]
    assert command.endswith("manage.py api_token --customers 2 --name lab-bench") and user == "bank"
    with pytest.raises(Exception, match="printed 1 tokens for 2 customers"):
        money.api_tokens(PROJECT, 2, "lab-bench", connect=lambda labdir, name: TokenHost("customer0001 bank_a\n"))


def test_lab_up_api_makes_the_api_hosts(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from lab import cli

    seen = []

    class Report:
        def summary(self):
            return "done"

    def fake_up(project, overrides, say, on_result, max_step=None, forget=False, on_converged=None, offline=False):
        seen.append(project.topology(overrides))
        return Report()

    monkeypatch.setattr(cli.lifecycle, "up", fake_up)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LAB_API", raising=False)
    result = CliRunner().invoke(cli.cli, ["up", "--api", "2"])
    assert result.exit_code == 0, result.output
    assert [h.name for h in seen[0].tier("api")] == ["api1", "api2"]
    assert CliRunner().invoke(cli.cli, ["up", "--api", "5"]).exit_code != 0  # at most 4: refused
