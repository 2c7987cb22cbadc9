"""Step 6 recipes: xapian-tcpsrv on each search host's private address, and every web host's Haystack over them."""

from __future__ import annotations

from lab.recipes import Target, recipe
from provision.step1_bootstrap.recipes import APP_USER, VENV, manage
from provision.step5_pooler.recipes import site_overlay

SERVER_UNIT = "xapian-tcpsrv"
SERVER_USER = "xapian"
DATA_DIR = "/var/lib/xapian-search"
DATABASE = f"{DATA_DIR}/bank"  # the one database a writable xapian-tcpsrv serves (it makes it on first start)
# python3-xapian: Debian's bindings for the hosts' own Python 3.11, the one the site's venv runs. Only this package
# is linked into the venv (not --system-site-packages, which would show every Debian Python module to the site).
DEBIAN_BINDINGS = "/usr/lib/python3/dist-packages/xapian"


@recipe(tiers=("search",))
def search_server(t: Target) -> None:
    port = t.topology.port("search")
    t.packages("xapian-tools")
    if not t.test("id -u %s", SERVER_USER):
        t.run("useradd --system --home-dir %s --no-create-home --shell /usr/sbin/nologin %s", DATA_DIR, SERVER_USER)
        t.changed(f"created system user {SERVER_USER}")
    t.directory(DATA_DIR, 0o750, SERVER_USER, SERVER_USER)
    with t.owed("xapian-tcpsrv-restart") as earlier_change:
        changed = t.template(f"/etc/systemd/system/{SERVER_UNIT}.service", "step6_search/templates/xapian-tcpsrv.service.j2",
                             user=SERVER_USER, port=port, database=DATABASE, data_dir=DATA_DIR)
        if changed or earlier_change:
            t.run("systemctl daemon-reload")
        t.service(SERVER_UNIT, restart=changed or earlier_change)
    t.wait_for_port(t.host.ip, port)


def venv_site_packages(t: Target) -> str:
    return t.run("%s -c %s", f"{VENV}/bin/python", "import sysconfig; print(sysconfig.get_path('purelib'))").stdout.strip()


@recipe(tiers=("web",), after=("step6_search.search_server",))
def site_search(t: Target) -> None:
    """The site's Haystack on every search host this web host may reach (writes to each, reads from the first that
    answers); with none, the search page queries the database."""
    servers = t.topology.serving("search", client=t.host)
    link = f"{venv_site_packages(t)}/xapian"
    if not servers:
        t.absent(link)
        site_overlay(t, "search", {})
        return
    t.packages("python3-xapian")
    if t.run("readlink %s", link, check=False).stdout.strip() != DEBIAN_BINDINGS:
        t.run("ln -sfn %s %s", DEBIAN_BINDINGS, link)
        t.changed(f"linked Debian's python3-xapian into {VENV}", "app-code")
    port = t.topology.port("search", client=t.host)
    site_overlay(t, "search", {"search_servers": [f"{h.ip}:{port}" for h in servers]})


@recipe(tiers=("web",), first_only=True, after=("step6_search.site_search",))
def search_index(t: Target) -> None:
    """Accounts made before the search server (the sample data) into its index, once: later changes are indexed by
    the site itself as each commits (accounts.search.AccountSignalProcessor)."""
    if not t.topology.serving("search", client=t.host):
        return
    done = t.run(t.locked("bank-search-index", manage("search_catch_up")), user=APP_USER).stdout
    if "indexed" in done:
        t.changed(done.strip().splitlines()[-1])
