"""Step 5 recipes: nginx balancing every web host, and the site's static files served by nginx itself."""

from __future__ import annotations

import shlex

from lab.recipes import RecipeError, Target, recipe
from provision.step2_database.recipes import STATIC_ROOT
from provision.step3_appserver.recipes import APP_PORT

SITE = "/etc/nginx/sites-available/bank"
SYSCTL_FILE = "/etc/sysctl.d/60-balancer.conf"
# nginx opens a new connection to a web host for each request a sync Gunicorn worker answers (it closes
# every connection): at a few thousand requests/s the default 28k ports sit in TIME_WAIT within seconds
# and the balancer stalls. Reusing TIME_WAIT ports for new outgoing connections is safe with timestamps on.
BALANCER_SYSCTLS = {"net.ipv4.tcp_tw_reuse": "1", "net.ipv4.ip_local_port_range": "15000 64999"}


@recipe(tiers=("lb",))
def nginx(t: Target) -> None:
    t.packages("nginx")
    changed = t.template(
        SITE, "step5_balancer/templates/nginx-bank.conf.j2",
        web_hosts=t.topology.serving("app", client=t.host), app_port=APP_PORT, static_root=STATIC_ROOT,
    )
    if t.run("readlink /etc/nginx/sites-enabled/bank", check=False).stdout.strip() != SITE:
        t.run(f"ln -sfn {SITE} /etc/nginx/sites-enabled/bank")
        t.changed("enabled the bank site")
        changed = True
    changed |= t.absent("/etc/nginx/sites-enabled/default")
    if changed:
        check = t.run("nginx -t", check=False)
        if not check.ok:
            raise RecipeError(f"nginx rejects the new configuration: {check.stderr.strip().splitlines()[-1]}")
    t.service("nginx", reload=changed)
    t.wait_for_port(t.host.ip, 80)


@recipe(tiers=("lb",))
def balancer_network(t: Target) -> None:
    """Kernel settings a busy reverse proxy needs, kept in sysctl.d so they survive a reboot."""
    t.file(SYSCTL_FILE, "".join(f"{key} = {value}\n" for key, value in BALANCER_SYSCTLS.items()))
    live = {key: " ".join(t.run(f"sysctl -n {key}").stdout.split()) for key in BALANCER_SYSCTLS}
    if live != BALANCER_SYSCTLS:
        applied = t.run(f"sysctl -q -p {SYSCTL_FILE}", check=False)
        if not applied.ok:
            raise RecipeError(f"cannot apply {SYSCTL_FILE}: {applied.stderr.strip()}")
        t.changed("applied " + ", ".join(f"{k}={v}" for k, v in BALANCER_SYSCTLS.items() if live[k] != v))


@recipe(tiers=("lb",), requires=("step3_appserver.static_files",))
def static_files(t: Target) -> None:
    """Copy web1's collected static tree when its manifest differs from the one nginx serves."""
    source_host = t.topology.tier("web")[0].name
    source = t.peer(source_host)
    manifest = f"{STATIC_ROOT}/staticfiles.json"
    wanted = source.run(f"sha256sum {manifest}").stdout.split()[:1]
    if t.run(f"sha256sum {manifest} 2>/dev/null", check=False).stdout.split()[:1] == wanted and wanted:
        return
    packed = source.run(f"tar -czf /tmp/.lab-static.tgz -C {STATIC_ROOT} .")
    if not packed.ok:
        raise RecipeError(f"cannot pack static files on {source_host}: {packed.stderr.strip()}")
    data = source.get("/tmp/.lab-static.tgz")
    source.run("rm -f /tmp/.lab-static.tgz")
    t.remote.put(data, "/tmp/.lab-static.tgz")
    root = shlex.quote(STATIC_ROOT)
    t.run(
        f"rm -rf {root}.new && mkdir -p {root}.new && tar -xzf /tmp/.lab-static.tgz -C {root}.new "
        f"&& chmod -R a+rX {root}.new && rm -rf {root}.old && (test ! -e {root} || mv {root} {root}.old) "
        f"&& mv {root}.new {root} && rm -rf {root}.old /tmp/.lab-static.tgz"
    )
    t.changed(f"copied static files from {source_host}")
