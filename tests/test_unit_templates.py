"""Unit tests for the Jinja templates: each renders under StrictUndefined for a two-web lab and says what the stack needs."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import jinja2
import pytest

from lab.providers.local import proxy
from lab.recipes import PROVISION_DIR
from lab.topology import AppServerSettings, Host, Overrides, resolve
from provision.step1_bootstrap.recipes import (APP_HOME, APP_USER, CURRENT, DATABASE, ROLE, SETTINGS, SQLITE_DB, STATIC_ROOT,
                                               VENV)
from provision.step3_appserver.recipes import APP_PORT, REQUEST_TIMEOUT_S, WSGI_SCRIPT, WSGI_SCRIPT_NAME, WSGI_SOCKET_PREFIX
from provision.step5_balancer.recipes import TLS_PEM, site_values, upstream_hosts, upstream_servers
from provision.step6_monitor.recipes import alert_values, prometheus_values  # rendered on a monitor lab: test_unit_monitor

DEFAULT_WORKERS = AppServerSettings().workers  # Gunicorn's, unless lab.toml [appserver] workers says otherwise

LOCAL_PROVIDER_DIR = Path(proxy.__file__).resolve().parent
TOPOLOGY = resolve({}, {}, Overrides(web=2), platform="linux")  # lb1 .11, web1 .21, web2 .22, db1 .31
WEB_IPS = ["192.168.56.21", "192.168.56.22"]
BOTH_SERVE = upstream_servers(upstream_hosts(TOPOLOGY), {"web1", "web2"}, frozenset())  # as the nginx recipe derives them
PROXY_URL = "http://192.168.56.1:3128"
STANDBY = Host("db2", "db", "192.168.56.32", 768, 1)  # step 6's hot standby, streaming from db1


def firewall_rules(host: str, machine: str | None = "192.168.56.1"):
    """The rules the firewall recipe passes for a host: the stack's links into it, as the topology derives them."""
    return TOPOLOGY.inbound(TOPOLOGY.host(host), machine)


# template (relative to provision/) → (host it is rendered for, the values its recipe passes besides host/topology)
CASES: dict[str, tuple[str, dict]] = {
    "step1_bootstrap/templates/hosts.j2": ("web1", {}),
    "step1_bootstrap/templates/apt-proxy.conf.j2": ("db1", {"proxy_url": PROXY_URL}),
    "step1_bootstrap/templates/pip.conf.j2": ("web2", {"proxy_url": PROXY_URL}),
    "step1_bootstrap/templates/nftables.conf.j2": ("db1", {"rules": firewall_rules("db1")}),
    "step2_database/templates/postgresql-lab.conf.j2": ("db1", {"max_connections": 100}),
    "step2_database/templates/pg_hba.conf.j2": (
        "db1", {"clients": TOPOLOGY.clients(TOPOLOGY.host("db1"), "sql"), "database": DATABASE, "role": ROLE,
                "replication_peers": [STANDBY], "replication_role": "replicator"},
    ),
    "step5_pooler/templates/pgbouncer.ini.j2": (
        "web1", {"database": DATABASE, "replica_alias": "bank_replica", "primary_ip": "192.168.56.31",
                 "replica_ip": "192.168.56.32", "db_port": 5432, "port": 6432, "pool_size": 10, "max_client_conn": 24},
    ),
    "step5_pooler/templates/hba.conf.j2": ("web1", {"database": DATABASE, "replica_alias": "bank_replica", "role": ROLE}),
    "step6_cache/templates/memcached.conf.j2": ("db1", {"port": 11211, "memory_mb": 64}),
    "step6_search/templates/xapian-tcpsrv.service.j2": (
        "db1", {"user": "xapian", "port": 33333, "database": "/var/lib/xapian-search/bank", "data_dir": "/var/lib/xapian-search"}),
    "step6_monitor/templates/blackbox.yml.j2": ("db1", {}),
    "step6_monitor/templates/alertmanager.yml.j2": ("db1", {}),
    "step6_monitor/templates/lab-alerts.yml.j2": ("db1", alert_values()),
    "step6_monitor/templates/prometheus.yml.j2": ("db1", {**prometheus_values(TOPOLOGY, TOPOLOGY.host("db1")), "probes": [
        {"url": "http://192.168.56.21:8000/health/", "host": "web1", "tier": "web"}]}),
    "step6_monitor/templates/nginx-stub-status.conf.j2": ("lb1", {"listen": "127.0.0.1:8081", "location": "/stub_status"}),
    "step6_monitor/templates/process-exporter.yml.j2": ("web1", {"group_name": "host"}),
    "step6_monitor/templates/exporter.default.j2": (
        "db1", {"unit": "prometheus-postgres-exporter", "args": "--web.listen-address=192.168.56.31:9187",
                "environment": {"DATA_SOURCE_NAME": "user=prometheus host=/run/postgresql dbname=postgres"}},
    ),
    "step6_queue/templates/redis.conf.j2": ("db1", {"port": 6379, "memory_mb": 64, "auth_file": "/etc/redis/lab-auth.conf"}),
    "step6_queue/templates/bank-worker.service.j2": (
        "db1", {"user": APP_USER, "current": CURRENT, "settings": SETTINGS, "venv": VENV, "concurrency": 2,
                "stop_timeout_s": 60},
    ),
    "step1_bootstrap/templates/bank.toml.j2": (
        "web1",
        {
            "secret_key": "s3cret", "allowed_hosts": ["192.168.56.11", "lb1", "192.168.56.21", "web1", "localhost"],
            "sqlite_db": SQLITE_DB, "static_root": STATIC_ROOT, "trusted_proxies": ["192.168.56.11"],
        },
    ),
    "step1_bootstrap/templates/bank-devserver.service.j2": (
        "web1", {"user": APP_USER, "current": CURRENT, "settings": SETTINGS, "venv": VENV, "port": APP_PORT},
    ),
    "step3_appserver/templates/gunicorn.service.j2": (
        "web2",
        {"user": APP_USER, "current": CURRENT, "settings": SETTINGS, "venv": VENV, "port": APP_PORT,
         "workers": DEFAULT_WORKERS, "worker_class": "sync", "threads": 1, "keepalive_s": 75,
         "request_timeout_s": REQUEST_TIMEOUT_S},
    ),
    "step3_appserver/templates/apache-ports.conf.j2": ("web2", {"port": APP_PORT}),
    "step3_appserver/templates/apache-bank.conf.j2": (
        "web2",
        {"user": APP_USER, "venv": VENV, "current": CURRENT, "port": APP_PORT, "processes": 2, "threads": 5,
         "socket_prefix": WSGI_SOCKET_PREFIX, "script": WSGI_SCRIPT, "script_dir": APP_HOME,
         "script_name": WSGI_SCRIPT_NAME},
    ),
    "step3_appserver/templates/bank.wsgi.j2": ("web2", {"settings": SETTINGS}),
    "step5_balancer/templates/nginx-bank.conf.j2": (
        "lb1", site_values(BOTH_SERVE, ["192.168.56.11"]),
    ),
    "step5_lbpair/templates/keepalived.conf.j2": (  # values as tests/test_unit_lbpair.py derives them for a pair
        "lb1", {"floating_ip": "192.168.56.10", "prefix_length": 24, "interface": "eth0", "peer_ip": "192.168.56.12",
                "priority": 150, "router_id": 10, "advert_interval_s": 1, "script_user": "keepalived_script",
                "nginx_check": "/usr/bin/systemctl is-active --quiet nginx", "check_interval_s": 1, "check_fall": 2,
                "check_rise": 2},
    ),
}


def render(templates: jinja2.Environment, name: str, **drop_or_add) -> str:
    host_name, values = CASES[name]
    values = {"host": TOPOLOGY.host(host_name), **values, **drop_or_add}
    return templates.get_template(name).render(topology=TOPOLOGY, **values)


def squid() -> str:
    return proxy.render_config("lab", TOPOLOGY.gateway, TOPOLOGY.subnet, Path("/run/lab/lab"), Path("/var/cache/lab/squid"))


# -- every template renders ------------------------------------------------------------------------


def test_every_template_is_covered():
    found = {str(p.relative_to(PROVISION_DIR)) for p in PROVISION_DIR.rglob("*.j2")}
    assert found == set(CASES), "a template was added or removed: give it values in CASES"
    assert sorted(p.name for p in LOCAL_PROVIDER_DIR.glob("*.j2")) == ["squid.conf.j2"]


def test_converge_environment_is_strict(templates):
    assert templates.undefined is jinja2.StrictUndefined
    with pytest.raises(jinja2.UndefinedError):
        templates.from_string("{{ nothing }}").render()


@pytest.mark.parametrize("name", sorted(CASES))
def test_template_renders_completely(templates, name):
    text = render(templates, name)
    assert text.endswith("\n")
    assert "{{" not in text and "{%" not in text
    assert "None" not in text and "Undefined" not in text
    assert text.startswith(("# managed by lab", "// managed by lab", "#!/usr/sbin/nft -f\n# managed by lab"))


@pytest.mark.parametrize(
    ("name", "value"), [(name, value) for name in sorted(CASES) for value in sorted(CASES[name][1])]
)
def test_template_without_one_of_its_values_raises(templates, name, value):
    host_name, values = CASES[name]
    values = {k: v for k, v in values.items() if k != value}
    with pytest.raises(jinja2.UndefinedError, match=value):
        templates.get_template(name).render(host=TOPOLOGY.host(host_name), topology=TOPOLOGY, **values)


def test_template_without_host_raises(templates):
    with pytest.raises(jinja2.UndefinedError):
        templates.get_template("step3_appserver/templates/gunicorn.service.j2").render(topology=TOPOLOGY, **CASES[
            "step3_appserver/templates/gunicorn.service.j2"][1])


def test_squid_config_renders_completely():
    text = squid()
    assert "{{" not in text and "{%" not in text and "None" not in text
    assert "/run/lab/lab/squid.pid" in text
    assert "cache_dir ufs /var/cache/lab/squid " in text


# -- what the rendered files say ----------------------------------------------------------------------


def test_hosts_file_names_every_host(templates):
    lines = render(templates, "step1_bootstrap/templates/hosts.j2").splitlines()
    for host in TOPOLOGY.hosts:
        assert f"{host.ip}\t{host.name}" in lines
    assert "127.0.0.1\tlocalhost" in lines


def upstream_server_lines(text: str) -> list[str]:
    upstream = re.search(r"upstream bank_web \{(.*?)\}", text, re.S)
    assert upstream, text
    return re.findall(r"^\s*server (\S+)", upstream.group(1), re.M)


def test_nginx_balances_over_both_web_hosts(templates):
    text = render(templates, "step5_balancer/templates/nginx-bank.conf.j2")
    assert upstream_server_lines(text) == [f"{ip}:8000" for ip in WEB_IPS]
    assert re.search(r"^\s*proxy_next_upstream error timeout", text, re.M)
    assert "proxy_next_upstream_tries 2;" in text
    assert "listen 192.168.56.11:443 ssl http2 default_server;" in text
    assert "proxy_pass http://bank_web;" in text
    assert f"alias {STATIC_ROOT}/;" in text


def test_nginx_serves_https_and_redirects_http(templates):
    text = render(templates, "step5_balancer/templates/nginx-bank.conf.j2")
    plain, other_hosts, tls, bench_plain = re.findall(r"^server \{\n(.*?)^\}", text, re.S | re.M)
    assert "listen 192.168.56.11:80;" in plain and "server_name lb1 192.168.56.11;" in plain
    assert "return 301 https://$host$request_uri;" in plain and "proxy_pass" not in plain
    # any other Host header is refused, never echoed into a Location
    assert "listen 192.168.56.11:80 default_server;" in other_hosts and "return 400;" in other_hosts
    assert "$host" not in other_hosts and "proxy_pass" not in other_hosts
    assert f"ssl_certificate {TLS_PEM};" in tls and f"ssl_certificate_key {TLS_PEM};" in tls
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in tls
    assert tls.count("proxy_set_header X-Forwarded-Proto $scheme;") == 4  # every location that proxies (/api/ too)
    # `lab bench --scheme http`'s way in: the bench's page only, without TLS, which the site believes TLS-offloaded
    assert "listen 192.168.56.11:8080;" in bench_plain and "ssl" not in bench_plain
    assert "proxy_pass http://bank_web;" in bench_plain and "proxy_set_header X-Forwarded-Proto https;" in bench_plain
    assert "$scheme" not in bench_plain and "return 301" not in bench_plain
    proxied = re.findall(r"location = (\S+) \{(.*?)\n    \}", bench_plain, re.S)
    assert [path for path, _ in proxied] == ["/hello/"]  # no login, no session page in clear text
    assert 'proxy_set_header Cookie "";' in proxied[0][1]
    assert bench_plain.count("proxy_pass") == 1
    assert re.search(r"location / \{\s*return 404;\s*\}", bench_plain)


def test_nginx_rate_limits_login_posts_only(templates):
    text = render(templates, "step5_balancer/templates/nginx-bank.conf.j2")
    assert re.search(r"map \$request_method \$bank_login_client \{\s*POST\s+\$binary_remote_addr;\s*default \"\";", text)
    assert "limit_req_zone $bank_login_client zone=bank_login:1m rate=5r/s;" in text
    for path in ("/accounts/login/", "/admin/login/"):
        block = re.search(rf"location = {re.escape(path)} \{{(.*?)\n    \}}", text, re.S).group(1)
        assert "limit_req zone=bank_login burst=20 nodelay;" in block and "limit_req_status 429;" in block
    assert text.count("limit_req zone=bank_login") == 2  # (and /api/ its own zone: test_unit_api)


def test_nginx_follows_the_web_tier(templates):
    one = upstream_servers(TOPOLOGY.serving("app")[:1], {"web1"}, frozenset())
    text = render(templates, "step5_balancer/templates/nginx-bank.conf.j2", servers=one)
    assert upstream_server_lines(text) == ["192.168.56.21:8000"]
    assert "proxy_next_upstream_tries 1;" in text


def test_pg_hba_admits_exactly_the_web_hosts_with_scram(templates):
    text = render(templates, "step2_database/templates/pg_hba.conf.j2")
    rules = [line.split() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    remote = [r for r in rules if r[0] != "local" and r[1] != "replication"]
    assert [r for r in rules if r[1] == "replication"] == [
        ["host", "replication", "replicator", "192.168.56.32/32", "scram-sha-256"]]  # the standby, to stream
    assert {r[0] for r in remote} == {"host"}  # no hostssl/hostnossl/other surprises
    assert [r[3] for r in remote] == [f"{ip}/32" for ip in WEB_IPS]
    assert all(r[1:3] == [DATABASE, ROLE] and r[4] == "scram-sha-256" for r in remote)
    assert [r for r in rules if r[0] == "local"] == [
        ["local", "all", "postgres", "peer"], ["local", "all", "all", "peer"],
    ]
    assert "trust" not in text and " md5" not in text


def test_postgresql_listens_on_loopback_and_its_own_ip(templates):
    text = render(templates, "step2_database/templates/postgresql-lab.conf.j2")
    assert "listen_addresses = 'localhost,192.168.56.31'" in text
    assert "password_encryption = 'scram-sha-256'" in text


def test_the_app_server_and_the_balancer_give_a_request_the_same_time(templates):
    # gunicorn's default 30 s against nginx's 60 s: a slow login (PBKDF2 on an emulated VM) was killed as a 502
    unit = render(templates, "step3_appserver/templates/gunicorn.service.j2")
    assert f"--timeout {REQUEST_TIMEOUT_S} " in unit
    site = render(templates, "step5_balancer/templates/nginx-bank.conf.j2")
    locations = site.count("proxy_pass http://bank_web;")
    assert locations and site.count(f"proxy_read_timeout {REQUEST_TIMEOUT_S}s;") == locations


def test_gunicorn_binds_the_host_ip(templates):
    text = render(templates, "step3_appserver/templates/gunicorn.service.j2")
    exec_start = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    assert len(exec_start) == 1
    assert exec_start[0].startswith(f"ExecStart={VENV}/bin/gunicorn ")
    assert "--bind 192.168.56.22:8000 " in exec_start[0]
    assert f"--workers {DEFAULT_WORKERS} " in exec_start[0]
    assert "0.0.0.0" not in text
    assert f"User={APP_USER}" in text.splitlines()
    assert f"Environment=BANK_CONFIG={SETTINGS}" in text.splitlines()


def test_the_development_server_listens_on_the_hosts_private_address_only(templates):
    text = render(templates, "step1_bootstrap/templates/bank-devserver.service.j2")
    assert f"ExecStart={VENV}/bin/python manage.py runserver 192.168.56.21:8000 --noreload" in text.splitlines()
    assert f"User={APP_USER}" in text.splitlines() and "0.0.0.0" not in text


def test_bank_settings_are_valid_toml(templates):
    data = tomllib.loads(render(templates, "step1_bootstrap/templates/bank.toml.j2"))
    assert (data["db_engine"], data["db_name"]) == ("sqlite", SQLITE_DB)  # the workshop's start; step 2 adds PostgreSQL
    assert not {"db_host", "db_password", "db_user"} & set(data)
    assert data["allowed_hosts"] == ["192.168.56.11", "lb1", "192.168.56.21", "web1", "localhost"]
    assert data["debug"] is False
    assert data["trusted_proxies"] == ["192.168.56.11"]


def test_nftables_drops_by_default_and_opens_only_the_tier_port(templates):
    text = render(templates, "step1_bootstrap/templates/nftables.conf.j2")
    input_chain = re.search(r"chain input \{(.*?)\n    \}", text, re.S).group(1)
    assert "policy drop;" in input_chain
    assert re.search(r"chain forward \{\s*type filter hook forward priority filter; policy drop;", text)
    assert "tcp dport 22 ip saddr { 192.168.56.1 } accept  # ssh" in input_chain
    assert "tcp dport 5432 ip saddr { 192.168.56.21, 192.168.56.22 } accept  # sql" in input_chain
    assert re.findall(r"tcp dport (\d+)", input_chain) == ["22", "5432"]


def test_nftables_without_control_address_allows_ssh_from_anywhere(templates):
    text = render(templates, "step1_bootstrap/templates/nftables.conf.j2", rules=firewall_rules("lb1", machine=None))
    assert re.search(r"^\s*tcp dport 22 accept  # ssh$", text, re.M)
    assert "tcp dport 80 ip saddr { 192.168.56.0/24 } accept  # http" in text
    assert "tcp dport 443 ip saddr { 192.168.56.0/24 } accept  # https" in text
    assert re.findall(r"tcp dport (\d+)", text) == ["22", "80", "443", "8080"]  # 8080: the bench's plain way in (a MACHINE link)


def test_nftables_opens_the_app_port_to_the_balancer_only(templates):
    web2 = TOPOLOGY.host("web2")
    text = render(templates, "step1_bootstrap/templates/nftables.conf.j2", host=web2, rules=firewall_rules("web2"))
    assert "tcp dport 8000 ip saddr { 192.168.56.11 } accept  # app" in text
    assert re.findall(r"tcp dport (\d+)", text) == ["22", "8000"]


def test_proxy_configs_point_at_the_proxy(templates):
    assert f'Acquire::http::Proxy "{PROXY_URL}";' in render(templates, "step1_bootstrap/templates/apt-proxy.conf.j2")
    assert f"proxy = {PROXY_URL}" in render(templates, "step1_bootstrap/templates/pip.conf.j2").splitlines()


def test_squid_allows_only_the_lab_subnet_to_only_the_registries():
    lines = squid().splitlines()
    acls = {line.split()[1]: line.split()[2:] for line in lines if line.startswith("acl ")}
    assert acls["lab_hosts"] == ["src", "192.168.56.0/24"]
    assert acls["registries"][0] == "dstdomain"
    assert sorted(acls["registries"][1:]) == sorted(
        ["deb.debian.org", "security.debian.org", "pypi.org", "files.pythonhosted.org"]
    )
    access = [line for line in lines if line.startswith("http_access ")]
    assert [a for a in access if a.startswith("http_access allow")] == ["http_access allow lab_hosts registries"]
    assert access[-1] == "http_access deny all"
    assert "http_port 192.168.56.1:3128" in lines
