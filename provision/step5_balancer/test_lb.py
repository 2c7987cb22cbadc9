"""Step 5 checks on the balancer: nginx enabled, on the private IP, HTTPS with a root-only key, every web host upstream,
login attempts rate limited, static files."""

TIERS = ("lb",)
# `lab check`: one line per check, what to try when it fails (lab/workshop.py prints it).
HINTS = {
    "test_nginx_enabled_and_running": "install the package nginx, `systemctl enable --now nginx`; `nginx -t` says what is wrong",
    "test_nginx_listens_on_private_ip_only": "`listen <lb1's IP>:80;` and `listen <lb1's IP>:443 ssl;` in /etc/nginx/sites-available/bank; remove the default site",
    "test_tls_key_is_root_only": "`chmod 700 /etc/nginx/tls && chown root:root /etc/nginx/tls/bank.pem && chmod 600 /etc/nginx/tls/bank.pem`",
    "test_https_configuration": "lb1's site: `ssl_protocols TLSv1.2 TLSv1.3;`, `return 301 https://$host$request_uri;`, `limit_req zone=bank_login`, `limit_req_status 429;`",
    "test_nginx_config_is_valid": "`nginx -t` names the line nginx rejects",
    "test_upstream_lists_every_web_host": "an `upstream` with `server <web IP>:8000` per web host and `proxy_next_upstream error timeout`",
    "test_static_files_present_for_nginx": "copy web1's /srv/bank/static to lb1's /srv/bank/static, readable by all (`chmod -R a+rX`)",
    "test_balancer_can_reuse_time_wait_ports": "net.ipv4.tcp_tw_reuse = 1 in /etc/sysctl.d/60-balancer.conf, then `sysctl -p` it",
}


def test_nginx_enabled_and_running(host):
    assert host.package("nginx").is_installed
    assert host.service("nginx").is_enabled
    assert host.service("nginx").is_running


def test_nginx_listens_on_private_ip_only(host, node):
    for port in (80, 443):
        assert host.socket(f"tcp://{node.ip}:{port}").is_listening
        assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening


def test_tls_key_is_root_only(host):
    with host.sudo():
        assert host.file("/etc/nginx/tls").mode == 0o700
        pem = host.file("/etc/nginx/tls/bank.pem")
        assert (pem.user, pem.group, pem.mode) == ("root", "root", 0o600)


def test_https_configuration(host):
    site = host.file("/etc/nginx/sites-enabled/bank").content_string
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in site
    assert "return 301 https://$host$request_uri;" in site
    assert "limit_req zone=bank_login" in site and "limit_req_status 429;" in site


def test_nginx_config_is_valid(host):
    with host.sudo():
        assert host.run("nginx -t").rc == 0


def test_upstream_lists_every_web_host(host, lab):
    site = host.file("/etc/nginx/sites-enabled/bank").content_string
    for web in lab.tier("web"):
        assert f"server {web.ip}:8000" in site
    assert "proxy_next_upstream error timeout" in site


def test_static_files_present_for_nginx(host):
    assert host.file("/srv/bank/static/staticfiles.json").exists
    assert host.file("/srv/bank/static/accounts/site.css").mode & 0o004


def test_balancer_can_reuse_time_wait_ports(host):
    assert host.sysctl("net.ipv4.tcp_tw_reuse") == 1
    assert host.file("/etc/sysctl.d/60-balancer.conf").contains("net.ipv4.tcp_tw_reuse = 1")
