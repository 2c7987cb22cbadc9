"""Unit tests for the stack as a graph: a test topology adds tiers and links, and the real recipes (real templates,
real Target) write the firewall, hosts file, nginx upstream, pg_hba and site settings that follow, on fake hosts."""
from __future__ import annotations

import ipaddress
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from dataclasses import replace

import pytest

from lab import stack as stacks
from lab.providers.base import HostFacts
from lab.recipes import converge, load_recipes
from lab.remote import CommandResult
from lab.stack import EVERY_TIER, MACHINE, Link, TierSpec
from lab.topology import Overrides, Topology, resolve
from provision.step1_bootstrap.recipes import OVERLAY_DIR, SETTINGS
from provision.step2_database.recipes import PG_ETC
from provision.step5_balancer.recipes import SITE

MACHINE_IP = "192.168.56.1"
FACTS = HostFacts(proxy_url=None, control_address=MACHINE_IP)
SECRETS = {"django_secret_key": "k3y", "db_password": "pw"}
# The recipes that turn links into files; the test stack's extra tiers touch none of their code.
DERIVED = ("step1_bootstrap.hosts_file", "step1_bootstrap.firewall", "step1_bootstrap.site_settings",
           "step2_database.postgresql", "step2_database.database_settings", "step5_balancer.nginx")

CACHE = TierSpec("cache", 40, 0, 0, 3, 256, 1, ("memcached",))
POOLER = TierSpec("pooler", 50, 1, 1, 1, 256, 1, ("pgbouncer",))


def cache_stack():
    """Memcached hosts the web hosts reach on 11211, and a metrics exporter on every host for the machine."""
    # the built-in stack, without the cache tier step 6 registers: this test's cache is its own
    return stacks.BUILT_IN.with_tier(CACHE, [Link("web", "cache", 11211, "cache")], presets={"full": 1}).with_links(
        Link(MACHINE, EVERY_TIER, 9100, "metrics"))


def pooler_stack():
    """The site's "sql" goes to a connection pooler, which alone reaches PostgreSQL (instead of web → db)."""
    base = stacks.current()
    links = tuple(link for link in base.links if link.purpose != "sql")
    return replace(base, links=links).with_tier(
        POOLER, [Link("web", "pooler", 6432, "sql"), Link("pooler", "db", 5432, "sql")])


class RecordingHost:
    """A host where every command succeeds, nothing exists yet, and every file a recipe writes is kept."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files
        self.uploads: dict[str, bytes] = {}
        self.commands: list[str] = []

    def run(self, command: str, user: str | None = None, stdin: str | None = None) -> CommandResult:
        self.commands.append(command)
        if stdin is not None and 'cat > "$tmp"' in command:  # Target.file for a file others may not read
            self.files[shlex.split(command)[-1]] = stdin
            return CommandResult(command, 0, "", "")
        words = shlex.split(command)
        if words[0] in ("stat", "test", "readlink") and ";" not in command:  # nothing there yet (a list ending in another command succeeds)
            return CommandResult(command, 1, "", "")
        if words[0].startswith("HEALTH="):  # the balancer asks each web host for /health/: every one answers
            ips = words[words.index("probe") + 2:]
            return CommandResult(command, 0, "".join(f"{ip} HTTP/1.1 200 OK\n" for ip in ips), "")
        if words[0] == "dpkg-query":  # every package is installed
            return CommandResult(command, 0, "".join(f"{w} ii\n" for w in words[3:-1]), "")
        moved = re.search(r"mv -f (\S+) (\S+)$", command)
        if moved:
            self.files[moved.group(2)] = self.uploads.pop(moved.group(1)).decode()
        return CommandResult(command, 0, "", "")

    def put(self, data: bytes, remote_path: str) -> None:
        self.uploads[remote_path] = data

    def get(self, remote_path: str) -> bytes:
        raise AssertionError("no download expected")

    def close(self) -> None:
        pass


def provision(topology: Topology) -> dict[str, dict[str, str]]:
    """Run the real recipes over the topology; every host's written files by path."""
    files: dict[str, dict[str, str]] = {}
    lock = threading.Lock()

    def connect(name: str) -> RecordingHost:
        with lock:
            return RecordingHost(files.setdefault(name, {}))

    recipes = []
    for r in load_recipes():
        if r.name in DERIVED:
            # Recipes for every host name every tier registered when they were loaded; a tier kind registers
            # itself before that (test_a_registered_kind_gets_every_hosts_recipes): here, the test stack's tiers.
            recipes.append(replace(r, tiers=tuple(topology.stack.tiers)) if r.tiers == stacks.all_tiers() else r)
    assert [r.name for r in recipes] == list(DERIVED)
    report = converge(topology, recipes, connect, FACTS, SECRETS)
    assert {r.status for r in report.results} == {"changed"}, [r for r in report.results if r.status != "changed"]
    return files


def firewall(files: dict[str, str]) -> dict[int, tuple[str, set[str]]]:
    """port → (purpose, sources) from a rendered /etc/nftables.conf (sources empty: from anywhere)."""
    rules = re.findall(r"^\s*tcp dport (\d+) (?:ip saddr \{ (.*?) \} )?accept  # (\S+)$", files["/etc/nftables.conf"], re.M)
    return {int(port): (purpose, set(sources.split(", ")) if sources else set()) for port, sources, purpose in rules}


def upstream(files: dict[str, str]) -> list[str]:
    block = re.search(r"upstream bank_web \{(.*?)\}", files[f"{SITE}"], re.S).group(1)
    return re.findall(r"^\s*server (\S+)", block, re.M)


def site_settings(files: dict[str, str]) -> dict:
    """The site's settings as app/bank/config.py reads them: bank.toml, then each bank.d/*.toml over it in name order."""
    settings = tomllib.loads(files[SETTINGS])
    for path in sorted(p for p in files if p.startswith(f"{OVERLAY_DIR}/") and p.endswith(".toml")):
        settings.update(tomllib.loads(files[path]))
    return settings


def pg_hba_addresses(files: dict[str, str]) -> list[str]:
    rules = [line.split() for line in files[f"{PG_ETC}/pg_hba.conf"].splitlines() if line.startswith("host")]
    return [r[3] for r in rules]


def ips(topology: Topology, tier: str) -> set[str]:
    return {h.ip for h in topology.tier(tier)}


# -- a cache tier and an exporter on every host ----------------------------------------------------------


@pytest.fixture(scope="module")
def cache_lab():
    topology = resolve({}, {}, Overrides(web=2, counts={"cache": 2}), platform="linux", stack=cache_stack())
    return topology, provision(topology)


def test_the_cache_tier_is_in_the_lab(cache_lab):
    topology, files = cache_lab
    assert [h.name for h in topology.hosts] == ["lb1", "web1", "web2", "db1", "cache1", "cache2"]
    assert topology.host("cache2").ip == "192.168.56.42"
    for host in topology.hosts:
        assert "192.168.56.41\tcache1\n192.168.56.42\tcache2\n" in files[host.name]["/etc/hosts"]


def test_cache_hosts_take_memcached_from_the_web_hosts_only(cache_lab):
    topology, files = cache_lab
    web = ips(topology, "web")
    for name in ("cache1", "cache2"):
        assert firewall(files[name]) == {22: ("ssh", {MACHINE_IP}), 11211: ("cache", web), 9100: ("metrics", {MACHINE_IP})}


def test_every_host_opens_its_own_port_and_the_exporter(cache_lab):
    topology, files = cache_lab
    assert firewall(files["lb1"]) == {22: ("ssh", {MACHINE_IP}), 80: ("http", {topology.subnet}), 443: ("https", {topology.subnet}),
                                  8080: ("http-plain", {MACHINE_IP}), 9100: ("metrics", {MACHINE_IP})}
    for name in ("web1", "web2"):
        assert firewall(files[name]) == {22: ("ssh", {MACHINE_IP}), 8000: ("app", {"192.168.56.11"}), 9100: ("metrics", {MACHINE_IP})}
    assert firewall(files["db1"]) == {22: ("ssh", {MACHINE_IP}), 5432: ("sql", ips(topology, "web")), 9100: ("metrics", {MACHINE_IP})}


def test_upstream_pg_hba_and_settings_are_unchanged_by_the_cache(cache_lab):
    topology, files = cache_lab
    assert upstream(files["lb1"]) == ["192.168.56.21:8000", "192.168.56.22:8000"]
    assert pg_hba_addresses(files["db1"]) == ["192.168.56.21/32", "192.168.56.22/32"]
    settings = site_settings(files["web2"])
    assert (settings["db_host"], settings["db_port"]) == ("192.168.56.31", 5432)
    assert settings["allowed_hosts"] == ["192.168.56.11", "lb1", "192.168.56.22", "web2", "localhost"]
    assert SETTINGS not in files["cache1"] and f"{PG_ETC}/pg_hba.conf" not in files["cache1"]


def test_a_cache_tier_with_no_hosts_disappears_from_every_file():
    topology = resolve({"tiers": {"cache": {"count": 0}}}, {}, Overrides(web=2), platform="linux", stack=cache_stack())
    files = provision(topology)
    assert set(files) == {"lb1", "web1", "web2", "db1"}
    for name, written in files.items():
        assert "cache" not in written["/etc/hosts"]
        assert 11211 not in firewall(written)
        assert firewall(written)[9100] == ("metrics", {MACHINE_IP})


def test_the_default_stack_writes_what_it_always_did():
    topology = resolve({}, {}, Overrides(web=2), platform="linux")
    files = provision(topology)
    assert firewall(files["db1"]) == {22: ("ssh", {MACHINE_IP}), 5432: ("sql", {"192.168.56.21", "192.168.56.22"})}
    assert firewall(files["web1"]) == {22: ("ssh", {MACHINE_IP}), 8000: ("app", {"192.168.56.11"})}
    assert firewall(files["lb1"]) == {22: ("ssh", {MACHINE_IP}), 80: ("http", {"192.168.56.0/24"}), 443: ("https", {"192.168.56.0/24"}),
                                  8080: ("http-plain", {MACHINE_IP})}
    assert upstream(files["lb1"]) == ["192.168.56.21:8000", "192.168.56.22:8000"]
    assert pg_hba_addresses(files["db1"]) == ["192.168.56.21/32", "192.168.56.22/32"]
    settings = site_settings(files["web1"])
    assert (settings["db_host"], settings["db_port"], settings["db_name"]) == ("192.168.56.31", 5432, "bank")
    assert settings["allowed_hosts"] == ["192.168.56.11", "lb1", "192.168.56.21", "web1", "localhost"]


# -- the site's database behind a pooler: settings, pg_hba and firewall follow the links -----------------


def test_a_pooler_between_web_and_db_moves_settings_pg_hba_and_firewall():
    topology = resolve({"tiers": {"lb": {"count": 2}}}, {}, Overrides(web=2), platform="linux", stack=pooler_stack())
    files = provision(topology)
    pooler = topology.host("pooler1")
    for name in ("web1", "web2"):
        settings = site_settings(files[name])
        assert (settings["db_host"], settings["db_port"]) == (pooler.ip, 6432)
        assert settings["allowed_hosts"][:4] == ["192.168.56.11", "192.168.56.12", "lb1", "lb2"]
    assert pg_hba_addresses(files["db1"]) == [f"{pooler.ip}/32"]
    assert firewall(files["db1"]) == {22: ("ssh", {MACHINE_IP}), 5432: ("sql", {pooler.ip})}
    assert firewall(files["pooler1"]) == {22: ("ssh", {MACHINE_IP}), 6432: ("sql", ips(topology, "web"))}
    for name in ("lb1", "lb2"):
        assert upstream(files[name]) == ["192.168.56.21:8000", "192.168.56.22:8000"]
    assert firewall(files["web1"])[8000] == ("app", {"192.168.56.11", "192.168.56.12"})


def test_the_upstream_is_every_host_serving_the_app_link():
    # more hosts for the site's pages (not step 6's api tier, which has a link of its own: test_unit_api)
    edge = TierSpec("edge", 60, 0, 0, 2, 512, 1, ("gunicorn",))
    stack = stacks.current().with_tier(edge, [Link("lb", "edge", 8000, "app")])
    topology = resolve({"tiers": {"edge": {"count": 1}}}, {}, platform="linux", stack=stack)
    files = provision(topology)
    assert upstream(files["lb1"]) == ["192.168.56.21:8000", "192.168.56.61:8000"]
    assert firewall(files["edge1"]) == {22: ("ssh", {MACHINE_IP}), 8000: ("app", {"192.168.56.11"})}
    assert pg_hba_addresses(files["db1"]) == ["192.168.56.21/32"]  # the edge tier has no "sql" link


def test_every_source_address_is_on_the_lab_network_or_the_machine(cache_lab):
    topology, files = cache_lab
    network = ipaddress.IPv4Network(topology.subnet)
    for written in files.values():
        for _, sources in firewall(written).values():
            assert sources and all(ipaddress.ip_network(s).subnet_of(network) for s in sources)


# -- a tier kind that registers itself ------------------------------------------------------------------


def test_a_registered_kind_gets_every_hosts_recipes_and_checks():
    code = (
        "from lab import stack\n"
        "stack.register_tier(stack.TierSpec('extra', 50, 0, 0, 3, 256, 1),"
        " [stack.Link('web', 'extra', 9200, 'extra')])\n"
        "from lab.recipes import load_recipes\n"
        "import provision.step1_bootstrap.test_firewall as checks\n"
        "print([r.name for r in load_recipes() if 'extra' in r.tiers], checks.TIERS)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ("['step1_bootstrap.hosts_file', 'step1_bootstrap.package_proxy', 'step1_bootstrap.firewall', "
                   "'step6_monitor.node_exporter', 'step6_monitor.process_exporter'] "
                   "('lb', 'web', 'db', 'cache', 'api', 'loadgen', 'q', 'monitor', 'search', 'extra')")  # cache .. search: provision/step6_* (q before monitor: the monitor's Redis exporter names the q tier)
