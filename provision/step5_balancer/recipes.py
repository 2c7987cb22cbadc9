"""Step 5 recipes: nginx balancing every web host that answers, over HTTPS with a certificate from the lab's own CA
(plain HTTP redirected), login attempts rate limited, the site's static files served by nginx itself, and its JSON API
under /api/ (rate limited per client) balanced over step 6's api hosts when the lab has them."""

from __future__ import annotations

import shlex
from typing import Iterable

from lab.recipes import RecipeError, Target, recipe
from lab.tls import Authority, issue, reason_to_reissue
from lab.topology import Host, Topology
from provision.step1_bootstrap.recipes import BALANCED_PURPOSES, STATIC_ROOT
from provision.step3_appserver.recipes import APP_PORT, HEALTH_PATH, REQUEST_TIMEOUT_S

SITE = "/etc/nginx/sites-available/bank"
STATIC_ARCHIVE = "/tmp/.lab-static.tgz"  # web1's static tree on its way to the balancer
SYSCTL_FILE = "/etc/sysctl.d/60-balancer.conf"
TLS_DIR = "/etc/nginx/tls"
# The certificate, then its key, in one file (nginx reads both from it): replaced whole, they always match.
# root:root 0600: nginx's master process reads it as root before its workers drop to www-data.
TLS_PEM = f"{TLS_DIR}/bank.pem"
HTTP_PORT, HTTPS_PORT = 80, 443
# The bench's plain-HTTP way in (lab/stack.py's http-plain link, the machine only): the TLS cost, measured.
PLAIN_BENCH_PORT = 8080
# All it serves: the page the bench's http scenario requests (loadtests/hello.py); every other path is 404 there.
PLAIN_BENCH_PATHS = ("/hello/",)
# Password guessing slowed at the door: each client address may POST to a login form LOGIN_RATE times a second,
# beyond a burst of LOGIN_BURST; the rest are answered 429 at once, before they reach a web host.
LOGIN_RATE_PER_SECOND = 5
LOGIN_BURST = 20
LOGIN_PATHS = ("/accounts/login/", "/admin/login/")
# API metering: each client (its bearer token, or its address when it sends none) may make API_RATE_PER_SECOND
# requests a second under /api/, beyond a burst of API_BURST; the rest are answered 429 (JSON) at once, before they
# reach an app server. Per token, so many customers behind one address (a bench, an office's NAT) each get their own.
API_PATH = "/api/"
API_RATE_PER_SECOND = 20
API_BURST = 40
# nginx opens a new connection to a web host for each request a sync Gunicorn worker answers (it closes
# every connection): at a few thousand requests/s the default 28k ports sit in TIME_WAIT within seconds
# and the balancer stalls. Reusing TIME_WAIT ports for new outgoing connections is safe with timestamps on.
BALANCER_SYSCTLS = {"net.ipv4.tcp_tw_reuse": "1", "net.ipv4.ip_local_port_range": "15000 64999"}
# A balancer of a pair listens on the floating address too, held or not (step5_lbpair): nginx binds it unheld.
# Said both ways, so a lab back to one balancer binds its own address only again (0 is the kernel's default).
NONLOCAL_BIND = "net.ipv4.ip_nonlocal_bind"


SERVER_PARAMETERS = "max_fails=1 fail_timeout=10s"
DRAIN_SECONDS = 60  # how long a drain waits for requests in flight to a host leaving the pool
# One request per web host, from the balancer, on nginx's own path to it: the status line of GET /health/.
PROBE = (
    'port=$1; shift; for ip in "$@"; do '
    'line=$(timeout 5 bash -c \'exec 3<>/dev/tcp/$0/$1 && printf "GET $2 HTTP/1.0\\r\\nHost: %s\\r\\n\\r\\n" "$0" >&3 '
    '&& head -n 1 <&3\' "$ip" "$port" "$HEALTH" 2>/dev/null); echo "$ip $line"; done'
)


def upstream_hosts(topology: Topology) -> list[Host]:
    """The hosts nginx balances the site over, those serving the `app` link (the web hosts)."""
    return list(topology.serving("app"))


def api_hosts(topology: Topology) -> list[Host]:
    """The hosts nginx balances /api/ over, those serving the `api` link (step 6's api hosts; none: /api/ goes to the
    web hosts with every other path)."""
    return list(topology.serving("api"))


def balanced_hosts(topology: Topology) -> list[Host]:
    """Every host behind the balancer, web and api: the one place that says which (the recipe, the template's
    upstreams and the rolling restarts use it)."""
    return list(dict.fromkeys(h for purpose in BALANCED_PURPOSES for h in topology.serving(purpose)))


def healthy(lb: Target, hosts: Iterable[Host]) -> set[str]:
    """The hosts whose app server answers GET /health/ with 200, asked from the balancer itself."""
    hosts = list(hosts)
    if not hosts:
        return set()
    probed = lb.run("HEALTH=%s bash -c %s probe %s" + " %s" * len(hosts), HEALTH_PATH, PROBE, APP_PORT, *(h.ip for h in hosts))
    answers = dict(line.split(" ", 1) for line in probed.stdout.splitlines() if " " in line)
    return {h.name for h in hosts if answers.get(h.ip, "").split()[1:2] == ["200"]}


def upstream_servers(hosts: list[Host], answering: set[str], down: frozenset[str],
                     backups: Iterable[Host] = ()) -> list[dict[str, str]]:
    """The upstream's server lines: hosts that answer, those in `down` marked so (nginx sends them nothing new); then
    the `backups` that answer, which nginx sends requests only while none of the hosts can take them.

    nginx refuses an upstream without servers: when no host answers, all are listed (nothing to protect).
    """
    listed = [h for h in hosts if h.name in answering] or hosts
    spare = [h for h in backups if h.name in answering and h not in listed]
    return ([{"name": h.name, "address": f"{h.ip}:{APP_PORT}", "parameters": "down" if h.name in down else SERVER_PARAMETERS}
             for h in listed] +
            [{"name": h.name, "address": f"{h.ip}:{APP_PORT}",
              "parameters": "down" if h.name in down else f"{SERVER_PARAMETERS} backup"} for h in spare])


def site_servers(topology: Topology, answering: set[str], down: frozenset[str]) -> dict[str, list[dict[str, str]]]:
    """Both upstreams' server lines: the web hosts for the site; the api hosts for /api/, with the web hosts (which
    serve the same API) as backups, so an api host restarting or failing costs no request even when it is the only
    one. No api host: no api upstream, /api/ goes to the web hosts."""
    web = upstream_hosts(topology)
    api = api_hosts(topology)
    return {"servers": upstream_servers(web, answering, down),
            "api_servers": upstream_servers(api, answering, down, backups=web) if api else []}


def site_values(servers: list[dict[str, str]], addresses: Iterable[str],
                api_servers: list[dict[str, str]] = ()) -> dict[str, object]:  # type: ignore[assignment]
    """What the balancer's site template prints besides the host: its upstreams' servers (site_servers), the addresses
    it listens on (Topology.addresses: a pair's floating one too) and the constants above."""
    return {"servers": servers, "api_servers": list(api_servers), "addresses": list(addresses),
            "static_root": STATIC_ROOT, "http_port": HTTP_PORT, "https_port": HTTPS_PORT,
            "plain_bench_port": PLAIN_BENCH_PORT, "plain_bench_paths": PLAIN_BENCH_PATHS,
            "tls_pem": TLS_PEM, "login_paths": LOGIN_PATHS, "login_rate": f"{LOGIN_RATE_PER_SECOND}r/s",
            "login_burst": LOGIN_BURST, "api_path": API_PATH, "api_rate": f"{API_RATE_PER_SECOND}r/s",
            "api_burst": API_BURST, "request_timeout_s": REQUEST_TIMEOUT_S}


def write_site(lb: Target, answering: set[str], down: frozenset[str]) -> bool:
    changed = lb.template(SITE, "step5_balancer/templates/nginx-bank.conf.j2",
                          **site_values(addresses=lb.topology.addresses(lb.host),
                                        **site_servers(lb.topology, answering, down)))
    if changed:
        _check_config(lb)
    return changed


def _check_config(lb: Target) -> None:
    check = lb.run("nginx -t", check=False)
    if not check.ok:
        raise RecipeError(f"nginx rejects the new configuration: {check.stderr.strip().splitlines()[-1]}")


@recipe(tiers=("lb",))
def certificate(t: Target) -> None:
    """The balancer's key and certificate, for its name and address, signed by the lab's CA on this machine (the CA's
    key never leaves it); made anew only when the one there will not do (another CA, other names, ending soon)."""
    authority = Authority.from_secrets(t.secrets)
    if authority is None:
        raise RecipeError("no lab CA among the recipes' secrets: `lab up` makes it in .lab/ca/")
    t.directory(TLS_DIR, 0o700, "root", "root")
    with t.owed("nginx-certificate") as earlier_change:
        # Only the certificate comes back from the host, never the key.
        found = t.run("sed -n %s %s 2>/dev/null", "/BEGIN CERTIFICATE/,/END CERTIFICATE/p", TLS_PEM, check=False).stdout
        addresses = t.topology.addresses(t.host)  # a pair's floating address too: the site's, whoever holds it
        reason = reason_to_reissue(found, authority, [t.host.name], addresses)
        changed = False
        if reason:
            changed = t.file(TLS_PEM, issue(authority, [t.host.name], addresses), 0o600)
            t.changed(f"new certificate from the lab CA ({reason})")
        elif t.run("stat -c %s %s", "%a %U %G", TLS_PEM).stdout.split() != ["600", "root", "root"]:
            t.run("chown root:root %s && chmod 600 %s", TLS_PEM, TLS_PEM)
            t.changed(f"set {TLS_PEM} to 600 root:root")
        if (changed or earlier_change) and t.test("systemctl is-active --quiet nginx"):
            _check_config(t)
            t.run("systemctl reload nginx")
            t.changed("reloaded nginx for its new certificate")


@recipe(tiers=("lb",))
def balancer_network(t: Target) -> None:
    """Kernel settings a busy reverse proxy needs, kept in sysctl.d so they survive a reboot; before nginx, which
    needs them to bind a pair's floating address."""
    wanted = {**BALANCER_SYSCTLS, NONLOCAL_BIND: "1" if t.host in t.topology.balancer_pair else "0"}
    t.file(SYSCTL_FILE, "".join(f"{key} = {value}\n" for key, value in wanted.items()))
    live = {key: " ".join(t.run("sysctl -n %s", key).stdout.split()) for key in wanted}
    if live != wanted:
        applied = t.run("sysctl -q -p %s", SYSCTL_FILE, check=False)
        if not applied.ok:
            raise RecipeError(f"cannot apply {SYSCTL_FILE}: {applied.stderr.strip()}")
        t.changed("applied " + ", ".join(f"{k}={v}" for k, v in wanted.items() if live[k] != v))


@recipe(tiers=("lb",), after=("step3_appserver.gunicorn", "step3_appserver.mod_wsgi", "step5_balancer.certificate"))
def nginx(t: Target) -> None:
    """nginx in front of the web (and api) hosts whose app server answers; it waits for their app server recipes,
    so a host joins the pool only once it can serve, and a host that cannot is left out and named."""
    t.packages("nginx")
    hosts = balanced_hosts(t.topology)
    with t.balancer_pool() as down:  # no app server host restarts meanwhile: the pool written here stays true
        answering = healthy(t, hosts)
        changed = write_site(t, answering, down)
        enabled = False
        if t.run("readlink /etc/nginx/sites-enabled/bank", check=False).stdout.strip() != SITE:
            t.run("ln -sfn %s /etc/nginx/sites-enabled/bank", SITE)
            t.changed("enabled the bank site")
            enabled = True
        enabled |= t.absent("/etc/nginx/sites-enabled/default")
        if enabled:
            _check_config(t)
        t.service("nginx", reload=changed or enabled)
    t.wait_for_port(t.host.ip, HTTP_PORT)
    t.wait_for_port(t.host.ip, HTTPS_PORT)
    t.wait_for_port(t.host.ip, PLAIN_BENCH_PORT)
    left_out = [h.name for h in hosts if h.name not in answering]
    if left_out:
        raise RecipeError(f"{', '.join(left_out)} left out of nginx's pool: GET {HEALTH_PATH} on port {APP_PORT} "
                          f"did not answer 200 from {t.host.name}")


def _peers(topology: Topology, host: Host) -> list[Host]:
    """The hosts that can serve what `host` serves behind the balancer (itself included)."""
    web = upstream_hosts(topology)
    return web if host in web else api_hosts(topology) + web


class NginxPool:
    """The balancer's side of a rolling restart (lab.recipes.target.Rollout): the upstream line of a host marked `down`,
    a graceful reload, and a wait until nginx's old workers (the ones that may still talk to it) are gone."""

    def serving(self, t: Target) -> set[str] | None:
        """The hosts in the pool now that can take the requests of t's host: its own upstream's (a web host's, the
        web hosts; an api host's, the api hosts and the web hosts, its upstream's backups). A web host is never
        drained on the strength of api hosts, which serve /api/ only."""
        peers = _peers(t.topology, t.host)
        answering: set[str] | None = None
        for lb in self._balancers(t):
            lines = lb.run("grep -E %s %s", r"^\s*server .*;  # ", SITE, check=False).stdout.splitlines()
            listed = {line.split("#", 1)[1].strip() for line in lines if not line.split("#", 1)[0].rstrip().endswith(" down;")}
            here = healthy(lb, [h for h in peers if h.name in listed])
            answering = here if answering is None else answering & here
        return answering

    def apply(self, t: Target, down: frozenset[str]) -> None:
        hosts = balanced_hosts(t.topology)
        for lb in self._balancers(t):
            if write_site(lb, healthy(lb, hosts), down):
                old_workers = lb.run("pgrep -d ' ' -f '^nginx: worker process'", check=False).stdout.split()
                lb.run("systemctl reload nginx")
                wait = f"for p in {' '.join(old_workers)}; do while kill -0 $p 2>/dev/null; do sleep 0.1; done; done"
                if not lb.test("timeout %s sh -c %s", DRAIN_SECONDS, wait):
                    raise RecipeError(f"nginx on {lb.host.name} still had requests in flight after {DRAIN_SECONDS} s")

    @staticmethod
    def _balancers(t: Target) -> list[Target]:
        """The balancer hosts already running nginx with the lab's site (none on a lab's first `lab up`)."""
        running = []
        for host in t.topology.tier("lb"):
            lb = t.on(host.name)
            if lb.test("systemctl is-active --quiet nginx && test -e %s", SITE):
                running.append(lb)
        return running


BALANCER_POOL = NginxPool()  # found by lab.recipes.discovery.balancer_pool: the rolling restarts of step 3 go through it


@recipe(tiers=("lb",), requires=("step3_appserver.static_files",))
def static_files(t: Target) -> None:
    """Copy web1's collected static tree when its manifest differs from the one nginx serves."""
    source = t.on(t.topology.tier("web")[0].name)
    manifest = f"{STATIC_ROOT}/staticfiles.json"
    wanted = source.run("sha256sum %s", manifest).stdout.split()[:1]
    if t.run("sha256sum %s 2>/dev/null", manifest, check=False).stdout.split()[:1] == wanted and wanted:
        return
    source.run("tar -czf %s -C %s .", STATIC_ARCHIVE, STATIC_ROOT)
    data = source.remote.get(STATIC_ARCHIVE)
    source.run("rm -f %s", STATIC_ARCHIVE)
    t.remote.put(data, STATIC_ARCHIVE)
    root = shlex.quote(STATIC_ROOT)  # one path in many places of one shell command: quoted once, pasted
    t.run(
        f"rm -rf {root}.new && mkdir -p {root}.new && tar -xzf {STATIC_ARCHIVE} -C {root}.new "
        f"&& chmod -R a+rX {root}.new && rm -rf {root}.old && (test ! -e {root} || mv {root} {root}.old) "
        f"&& mv {root}.new {root} && rm -rf {root}.old {STATIC_ARCHIVE}"
    )
    t.changed(f"copied static files from {source.host.name}")
