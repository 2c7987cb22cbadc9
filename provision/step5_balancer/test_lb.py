"""Step 5 checks on the balancer: nginx enabled, on the private IP, with every web host upstream and static files."""

TIERS = ("lb",)


def test_nginx_enabled_and_running(host):
    assert host.package("nginx").is_installed
    assert host.service("nginx").is_enabled
    assert host.service("nginx").is_running


def test_nginx_listens_on_private_ip_only(host, node):
    assert host.socket(f"tcp://{node.ip}:80").is_listening
    assert not host.socket("tcp://0.0.0.0:80").is_listening


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
