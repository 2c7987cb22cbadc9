"""Unit tests for lab.topology: resolve() defaults, presets, precedence, validation errors, with_web_count, load_file,
round-trips, the links' questions, and provider settings resolved through the provider's own schema."""
from __future__ import annotations

import json
import re

import pytest

from lab import stack as stacks
from lab.errors import ConfigFileError, LabError, TopologyError
from lab.providers.vagrant import settings as vagrant_settings
from lab.stack import Link, TierSpec
from lab.testing import linux_topology as linux
from lab.topology import PROVIDER_SETTINGS, Host, Opening, Overrides, Topology, load_file, resolve, with_web_count




def ips(topology: Topology) -> dict[str, str]:
    return {h.name: h.ip for h in topology.hosts}


# -- defaults -------------------------------------------------------------------------------


def test_defaults_give_one_host_per_tier_on_the_host_only_network():
    topo = linux()
    assert [h.name for h in topo.hosts] == ["lb1", "web1", "db1"]
    assert ips(topo) == {"lb1": "192.168.56.11", "web1": "192.168.56.21", "db1": "192.168.56.31"}
    assert [h.tier for h in topo.hosts] == ["lb", "web", "db"]
    assert topo.subnet == "192.168.56.0/24"
    assert topo.gateway == "192.168.56.1"
    assert topo.name == "lab"
    assert topo.app_server == "gunicorn"
    assert topo.provider == "local"


def test_defaults_give_each_tier_its_memory_and_cpus():
    topo = linux()
    assert {h.name: (h.memory_mb, h.cpus) for h in topo.hosts} == {
        "lb1": (512, 1),
        "web1": (768, 1),
        "db1": (768, 1),
    }


def test_resolve_with_explicit_empty_environ_ignores_os_environ(monkeypatch):
    monkeypatch.setenv("LAB_WEB", "5")
    monkeypatch.setenv("LAB_NAME", "fromenv")
    topo = linux(environ={})
    assert topo.count("web") == 1
    assert topo.name == "lab"


# -- precedence: defaults → [tiers.X] → [hosts.X] → LAB_* → flags ---------------------------


def test_tier_count_comes_from_the_file():
    topo = linux({"tiers": {"web": {"count": 3}}})
    assert [h.name for h in topo.tier("web")] == ["web1", "web2", "web3"]
    assert [h.ip for h in topo.tier("web")] == ["192.168.56.21", "192.168.56.22", "192.168.56.23"]


def test_environment_count_beats_the_file():
    topo = linux({"tiers": {"web": {"count": 3}}}, {"LAB_WEB": "4"})
    assert topo.count("web") == 4


def test_flag_beats_environment_and_file():
    topo = linux({"tiers": {"web": {"count": 3}}}, {"LAB_WEB": "4"}, Overrides(web=2))
    assert topo.count("web") == 2


def test_overrides_counts_set_other_tiers_and_name_the_flag():
    topo = linux({"tiers": {"lb": {"count": 1}}}, {"LAB_LB": "1"}, Overrides(counts={"lb": 2}))
    assert [h.name for h in topo.tier("lb")] == ["lb1", "lb2"]
    with pytest.raises(TopologyError, match=r"--lb must be from 1 to 2"):
        linux(overrides=Overrides(counts={"lb": 3}))


def test_tier_memory_applies_to_every_host_and_host_table_beats_it():
    topo = linux(
        {
            "tiers": {"web": {"count": 2, "memory": 1024, "cpus": 2}},
            "hosts": {"web2": {"memory": 2048, "cpus": 4}},
        }
    )
    assert (topo.host("web1").memory_mb, topo.host("web1").cpus) == (1024, 2)
    assert (topo.host("web2").memory_mb, topo.host("web2").cpus) == (2048, 4)
    assert topo.host("lb1").memory_mb == 512  # other tiers keep their defaults


def test_host_table_sets_the_ip():
    topo = linux({"hosts": {"db1": {"ip": "192.168.56.200"}}})
    assert topo.host("db1").ip == "192.168.56.200"


def test_name_file_then_environment():
    assert linux({"lab": {"name": "shop"}}).name == "shop"
    assert linux({"lab": {"name": "shop"}}, {"LAB_NAME": "other"}).name == "other"


def test_subnet_file_then_environment_and_ips_follow_it():
    topo = linux({"lab": {"subnet": "10.20.0.0/24"}})
    assert ips(topo) == {"lb1": "10.20.0.11", "web1": "10.20.0.21", "db1": "10.20.0.31"}
    topo = linux({"lab": {"subnet": "10.20.0.0/24"}}, {"LAB_SUBNET": "172.16.5.0/24"})
    assert topo.subnet == "172.16.5.0/24"
    assert topo.gateway == "172.16.5.1"
    assert topo.host("web1").ip == "172.16.5.21"


def test_provider_file_then_environment_then_flag():
    assert linux({"lab": {"provider": "vagrant"}}).provider == "vagrant"
    assert linux({"lab": {"provider": "vagrant"}}, {"LAB_PROVIDER": "local"}).provider == "local"
    topo = linux({"lab": {"provider": "local"}}, {"LAB_PROVIDER": "local"}, Overrides(provider="vagrant"))
    assert topo.provider == "vagrant"


def test_provider_errors_name_where_the_value_came_from():
    with pytest.raises(TopologyError, match=r"^lab\.provider "):
        linux({"lab": {"provider": "nope"}})
    with pytest.raises(TopologyError, match=r"^LAB_PROVIDER "):
        linux(environ={"LAB_PROVIDER": "nope"})
    with pytest.raises(TopologyError, match=r"^--provider "):
        linux(overrides=Overrides(provider="nope"))


@pytest.mark.parametrize(("platform", "expected"), [("linux", "local"), ("darwin", "vagrant")])
def test_provider_auto_picks_by_platform(platform, expected):
    assert resolve({}, {}, Overrides(), platform=platform).provider == expected
    assert resolve({"lab": {"provider": "auto"}}, {}, Overrides(), platform=platform).provider == expected


def test_explicit_provider_is_kept_whatever_the_platform():
    assert resolve({}, {}, Overrides(provider="local"), platform="darwin").provider == "local"


# -- --web and other integer errors -----------------------------------------------------------


@pytest.mark.parametrize("value", [0, 100, "abc"])
def test_bad_web_flag_names_the_flag_and_the_range(value):
    with pytest.raises(TopologyError) as caught:
        linux(overrides=Overrides(web=value))
    message = str(caught.value)
    assert message.startswith("--web ")
    assert "from 1 to 9" in message
    assert caught.value.exit_code == 3


def test_bad_environment_count_names_the_variable():
    with pytest.raises(TopologyError, match=r"^LAB_WEB must be an integer from 1 to 9 \(got 'many'\)"):
        linux(environ={"LAB_WEB": "many"})


@pytest.mark.parametrize("value", [True, 2.5, "two"])
def test_non_integer_counts_in_the_file_are_refused(value):
    with pytest.raises(TopologyError, match=r"tiers\.web\.count must be an integer"):
        linux({"tiers": {"web": {"count": value}}})


def test_count_above_tier_maximum_is_refused():
    with pytest.raises(TopologyError, match=r"tiers\.db\.count must be from 1 to 2 \(got 3\)"):
        linux({"tiers": {"db": {"count": 3}}})


def test_memory_below_minimum_is_refused():
    with pytest.raises(TopologyError, match=r"hosts\.web1\.memory must be from 128 to 65536"):
        linux({"hosts": {"web1": {"memory": 64}}})


# -- unknown names list what is allowed --------------------------------------------------------


def test_unknown_tier_lists_the_tiers():
    with pytest.raises(TopologyError) as caught:
        linux({"tiers": {"extra": {"count": 1}}})
    assert "extra" in str(caught.value)
    assert "lb, web, db, cache" in str(caught.value)


def test_unknown_lab_key_lists_the_allowed_keys():
    with pytest.raises(TopologyError) as caught:
        linux({"lab": {"nmae": "x"}})
    assert "'nmae'" in str(caught.value)
    assert "app_server, name, preset, provider, subnet" in str(caught.value)


def test_unknown_top_level_table_is_refused():
    with pytest.raises(TopologyError, match=r"unknown key 'servers'; allowed: appserver, bench, db, hosts, lab, tiers"):
        linux({"servers": {}})


def test_unknown_tier_key_is_refused():
    with pytest.raises(TopologyError, match=r"\[tiers\.web\]: unknown key 'disk'; allowed: count, cpus, memory"):
        linux({"tiers": {"web": {"disk": 10}}})


def test_unknown_host_lists_the_hosts():
    with pytest.raises(TopologyError) as caught:
        linux({"hosts": {"web2": {"memory": 512}}})  # only web1 exists by default
    message = str(caught.value)
    assert "web2" in message
    assert "hosts: lb1, web1, db1" in message


def test_unknown_host_key_is_refused():
    with pytest.raises(TopologyError, match=r"\[hosts\.web1\]: unknown key 'role'; allowed: cpus, ip, memory"):
        linux({"hosts": {"web1": {"role": "x"}}})


def test_unknown_provider_lists_the_providers():
    with pytest.raises(TopologyError) as caught:
        linux(overrides=Overrides(provider="docker"))
    assert "auto, local, vagrant" in str(caught.value)
    assert "'docker'" in str(caught.value)


def test_unknown_app_server_is_refused():
    with pytest.raises(TopologyError, match=r"must be one of gunicorn"):
        linux({"lab": {"app_server": "uwsgi"}})


@pytest.mark.parametrize("name", ["Lab", "1lab", "lab_1", "", "a" * 21])
def test_bad_lab_names_are_refused(name):
    with pytest.raises(TopologyError, match=r"^lab\.name must be 1-20 lowercase"):
        linux({"lab": {"name": name}})


def test_non_table_sections_are_refused():
    with pytest.raises(TopologyError, match=r"\[lab\] must be a table"):
        linux({"lab": "x"})
    with pytest.raises(TopologyError, match=r"\[tiers\.web\] must be a table"):
        linux({"tiers": {"web": 3}})


# -- subnets and addresses ---------------------------------------------------------------------


def test_public_subnet_is_refused():
    with pytest.raises(TopologyError, match=r"must be a private range"):
        linux({"lab": {"subnet": "8.8.8.0/24"}})


def test_small_subnet_is_refused():
    with pytest.raises(TopologyError, match=r"/26 or larger; got /27"):
        linux({"lab": {"subnet": "192.168.56.0/27"}})


def test_subnet_with_host_bits_is_refused():
    with pytest.raises(TopologyError, match=r"lab\.subnet must be an IPv4 network"):
        linux({"lab": {"subnet": "192.168.56.1/24"}})


def test_garbage_subnet_from_environment_names_the_variable():
    with pytest.raises(TopologyError, match=r"^LAB_SUBNET must be an IPv4 network"):
        linux(environ={"LAB_SUBNET": "not-a-net"})


def test_a_slash_26_is_enough():
    topo = linux({"lab": {"subnet": "10.9.8.0/26"}})
    assert topo.host("db1").ip == "10.9.8.31"


def test_duplicate_ip_is_refused_and_names_the_owner():
    with pytest.raises(TopologyError) as caught:
        linux({"hosts": {"web1": {"ip": "192.168.56.11"}}})
    message = str(caught.value)
    assert "192.168.56.11" in message
    assert "lb1" in message


def test_host_ip_on_the_bridge_is_refused():
    with pytest.raises(TopologyError, match=r"already used by the machine's bridge"):
        linux({"hosts": {"db1": {"ip": "192.168.56.1"}}})


@pytest.mark.parametrize("ip", ["10.0.0.5", "192.168.56.0", "192.168.56.255", "nope"])
def test_host_ip_outside_subnet_or_not_a_host_address_is_refused(ip):
    with pytest.raises(TopologyError, match=r"^hosts\.db1\.ip must be"):
        linux({"hosts": {"db1": {"ip": ip}}})


# -- lookups ----------------------------------------------------------------------------------


def test_host_lookup_of_unknown_name_lists_the_hosts():
    with pytest.raises(TopologyError, match=r"no host 'web7' in this lab; hosts: lb1, web1, db1"):
        linux().host("web7")


def test_tier_and_count():
    topo = linux(overrides=Overrides(web=3))
    assert topo.count("web") == 3
    assert topo.count("db") == 1
    assert topo.tier("nope") == ()


# -- with_web_count -----------------------------------------------------------------------------


def test_with_web_count_grows_the_web_tier_and_keeps_the_others():
    topo = linux()
    grown = with_web_count(topo, 3)
    assert [h.name for h in grown.hosts] == ["lb1", "web1", "web2", "web3", "db1"]
    assert [h.ip for h in grown.tier("web")] == ["192.168.56.21", "192.168.56.22", "192.168.56.23"]
    assert grown.host("lb1") == topo.host("lb1")
    assert grown.host("db1") == topo.host("db1")
    assert grown.host("web1") == topo.host("web1")
    assert grown.host("web3").memory_mb == topo.host("web1").memory_mb
    assert (grown.name, grown.subnet, grown.provider) == (topo.name, topo.subnet, topo.provider)
    assert topo.count("web") == 1  # the original is untouched (frozen)


def test_with_web_count_shrinks_the_web_tier():
    topo = linux(overrides=Overrides(web=4))
    shrunk = with_web_count(topo, 2)
    assert [h.name for h in shrunk.hosts] == ["lb1", "web1", "web2", "db1"]
    assert shrunk.tier("web") == topo.tier("web")[:2]


def test_with_web_count_keeps_existing_hosts_custom_settings():
    topo = linux({"tiers": {"web": {"count": 2}}, "hosts": {"web2": {"ip": "192.168.56.99", "memory": 1024}}})
    grown = with_web_count(topo, 3)
    assert grown.host("web2") == Host("web2", "web", "192.168.56.99", 1024, 1)
    assert grown.host("web3").ip == "192.168.56.23"


def test_with_web_count_matches_a_fresh_resolve():
    assert with_web_count(linux(), 5) == linux(overrides=Overrides(web=5))


@pytest.mark.parametrize("count", [0, 10, "x"])
def test_with_web_count_refuses_bad_counts(count):
    with pytest.raises(TopologyError, match=r"^--web .*1 to 9"):
        with_web_count(linux(), count)


# -- load_file ----------------------------------------------------------------------------------


def test_load_file_missing_is_empty(tmp_path):
    assert load_file(tmp_path / "lab.toml") == {}


def test_load_file_reads_toml(tmp_path):
    path = tmp_path / "lab.toml"
    path.write_text('[lab]\nname = "shop"\n\n[tiers.web]\ncount = 2\n')
    data = load_file(path)
    assert data == {"lab": {"name": "shop"}, "tiers": {"web": {"count": 2}}}
    topo = linux(data)
    assert (topo.name, topo.count("web")) == ("shop", 2)


def test_load_file_malformed_raises_config_file_error(tmp_path):
    path = tmp_path / "lab.toml"
    path.write_text("[lab\nname = \n")
    with pytest.raises(ConfigFileError) as caught:
        load_file(path)
    assert str(caught.value).startswith("lab.toml: not valid TOML")
    assert caught.value.exit_code == 4
    assert "\n" not in " ".join(str(caught.value).split())


def test_load_file_unreadable_raises_config_file_error(tmp_path):
    path = tmp_path / "lab.toml"
    path.mkdir()  # exists, but reading it fails (IsADirectoryError)
    with pytest.raises(ConfigFileError, match=r"^lab\.toml: cannot read"):
        load_file(path)


# -- round-trip ---------------------------------------------------------------------------------


def test_to_dict_from_dict_round_trip_through_json():
    topo = linux(
        {"lab": {"name": "shop", "subnet": "10.1.2.0/24"}, "hosts": {"web2": {"memory": 1024}}},
        overrides=Overrides(web=3),
    )
    data = topo.to_dict()
    assert data["name"] == "shop"
    assert data["hosts"][0] == {"name": "lb1", "tier": "lb", "ip": "10.1.2.11", "memory_mb": 512, "cpus": 1}
    again = Topology.from_dict(json.loads(json.dumps(data)))
    assert again == topo
    assert isinstance(again.hosts, tuple)
    assert again.to_dict() == data


def test_to_dict_is_a_copy():
    topo = linux()
    data = topo.to_dict()
    data["hosts"][0]["ip"] = "changed"
    assert topo.host("lb1").ip == "192.168.56.11"


def test_topology_errors_are_lab_errors_with_one_line_messages():
    with pytest.raises(LabError) as caught:
        linux({"tiers": {"web": {"count": 42}}})
    assert isinstance(caught.value, TopologyError)
    assert re.fullmatch(r"[^\n]+", str(caught.value))


@pytest.mark.parametrize("subnet", ["0.0.0.0/24", "240.0.0.0/24", "192.0.2.0/24", "198.18.0.0/24", "100.64.0.0/24"])
def test_only_rfc1918_subnets_are_accepted(subnet):
    with pytest.raises(TopologyError, match="RFC 1918"):
        resolve({"lab": {"subnet": subnet}}, {}, platform="linux")


def test_bad_app_server_from_environment_names_the_variable():
    with pytest.raises(TopologyError, match="LAB_APP_SERVER"):
        resolve({}, {"LAB_APP_SERVER": "uwsgi"}, platform="linux")


def test_vagrant_settings_resolve_from_file_and_environment():
    topo = resolve({"vagrant": {"provider": "libvirt", "box_libvirt": "my/box"}}, {}, platform="linux")
    vagrant = vagrant_settings.of(topo)
    assert (vagrant.provider, vagrant.box_libvirt, vagrant.box_virtualbox) == ("libvirt", "my/box", "debian/bookworm64")
    topo = resolve({"vagrant": {"provider": "libvirt"}}, {"LAB_VAGRANT_PROVIDER": "virtualbox"}, platform="linux")
    assert vagrant_settings.of(topo).provider == "virtualbox"
    with pytest.raises(TopologyError, match="vagrant.provider must be one of auto, libvirt, virtualbox"):
        resolve({"vagrant": {"provider": "hyperv"}}, {}, platform="linux")
    with pytest.raises(TopologyError, match="unknown key 'box'"):
        resolve({"vagrant": {"box": "x"}}, {}, platform="linux")
    with pytest.raises(TopologyError, match=r"vagrant.boot_timeout must be from 30 to 7200"):
        resolve({"vagrant": {"boot_timeout": 5}}, {}, platform="linux")


# -- provider settings: each provider owns its table -------------------------------------------------


def test_the_vagrant_table_is_resolved_by_the_vagrant_providers_schema():
    assert PROVIDER_SETTINGS == {"vagrant": "lab.providers.vagrant.settings"}
    topo = linux({"vagrant": {"boot_timeout": 60}})
    assert isinstance(topo.settings("vagrant"), vagrant_settings.VagrantSettings)
    assert topo.settings("vagrant") == vagrant_settings.VagrantSettings(boot_timeout=60)
    assert topo.to_dict()["vagrant"]["boot_timeout"] == 60  # the state file keeps its [vagrant] shape
    assert Topology.from_dict(json.loads(json.dumps(topo.to_dict()))) == topo


def test_a_topology_made_without_provider_settings_has_the_providers_defaults():
    bare = Topology("lab", "192.168.56.0/24", "local", "gunicorn", ())
    assert vagrant_settings.of(bare) == vagrant_settings.VagrantSettings()


def test_topology_module_does_not_import_provider_internals():
    import subprocess
    import sys

    code = "import sys, lab.topology; print(any(m.startswith('lab.providers') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


# -- presets -------------------------------------------------------------------------------------------


def test_minimal_preset_is_todays_default():
    assert linux(overrides=Overrides(preset="minimal")) == linux()
    assert linux({"lab": {"preset": "minimal"}}) == linux()
    assert [h.name for h in linux(environ={"LAB_PRESET": "minimal"}).hosts] == ["lb1", "web1", "db1"]


def test_workshop_preset_has_two_web_hosts():
    assert [h.name for h in linux(overrides=Overrides(preset="workshop")).hosts] == ["lb1", "web1", "web2", "db1"]


def test_full_preset_has_every_tier_the_lab_builds():
    # "full" = every registered tier, optional ones included: today the tuned lab, one loadgen host (issue 13 grows it)
    # and lb2, the balancer pair (provision/step5_lbpair).
    full = linux(overrides=Overrides(preset="full")).hosts
    assert {h.tier for h in full} == set(stacks.current().tiers)
    assert [h for h in full if h.tier not in ("api", "loadgen", "monitor", "q", "search") and h.name != "lb2"] == \
        list(linux(overrides=Overrides(preset="tuned")).hosts)
    assert [h.name for h in full if h.tier == "lb"] == ["lb1", "lb2"]
    assert [h.name for h in full if h.tier == "q"] == ["q1", "q2"]


def test_preset_comes_from_file_then_environment_then_flag():
    assert linux({"lab": {"preset": "workshop"}}, {"LAB_PRESET": "minimal"}).count("web") == 1
    assert linux({"lab": {"preset": "minimal"}}, {"LAB_PRESET": "workshop"}).count("web") == 2
    assert linux(environ={"LAB_PRESET": "workshop"}, overrides=Overrides(preset="minimal")).count("web") == 1


def test_tier_table_and_flags_override_a_preset():
    assert linux({"lab": {"preset": "workshop"}, "tiers": {"web": {"count": 3}}}).count("web") == 3
    assert linux(environ={"LAB_WEB": "4"}, overrides=Overrides(preset="workshop")).count("web") == 4
    assert linux(overrides=Overrides(preset="workshop", web=1)).count("web") == 1


@pytest.mark.parametrize(("where", "kwargs"), [
    ("lab.preset", {"file_data": {"lab": {"preset": "huge"}}}),
    ("LAB_PRESET", {"environ": {"LAB_PRESET": "huge"}}),
    ("--preset", {"overrides": Overrides(preset="huge")}),
])
def test_unknown_preset_is_refused_with_the_topology_exit_code(where, kwargs):
    with pytest.raises(TopologyError) as caught:
        linux(**kwargs)
    assert str(caught.value).startswith(f"{where} must be one of minimal, workshop, tuned, full (got 'huge')")
    assert caught.value.exit_code == 3


# -- optional tiers ---------------------------------------------------------------------------------------

CACHE = TierSpec("cache", 40, 0, 0, 3, 256, 1, ("memcached",))


def with_cache():
    # the built-in stack, without the tiers step packages register: this one is the test's own
    return stacks.BUILT_IN.with_tier(CACHE, [Link("web", "cache", 11211, "cache")], presets={"full": 1})


def test_a_tier_whose_minimum_is_0_accepts_0_and_disappears():
    stack = with_cache()
    topo = resolve({"tiers": {"cache": {"count": 0}}}, {}, platform="linux", stack=stack)
    assert [h.name for h in topo.hosts] == ["lb1", "web1", "db1"]
    assert resolve({}, {"LAB_CACHE": "0"}, platform="linux", stack=stack).tier("cache") == ()
    assert resolve({}, {}, Overrides(counts={"cache": 0}), platform="linux", stack=stack).count("cache") == 0
    assert [h.name for h in resolve({}, {}, Overrides(preset="full"), platform="linux", stack=stack).hosts] == [
        "lb1", "lb2", "web1", "web2", "db1", "db2", "cache1"]
    assert resolve({}, {}, Overrides(counts={"cache": 2}), platform="linux", stack=stack).host("cache2").ip == "192.168.56.42"


def test_a_required_tier_refuses_0():
    with pytest.raises(TopologyError, match=r"^--web must be from 1 to 9 \(got 0\)") as caught:
        linux(overrides=Overrides(web=0))
    assert caught.value.exit_code == 3
    with pytest.raises(TopologyError, match=r"^tiers\.db\.count must be from 1 to 2 \(got 0\)"):
        linux({"tiers": {"db": {"count": 0}}})


def test_the_stack_refuses_inconsistent_tiers_and_links():
    with pytest.raises(ValueError, match="already registered"):
        stacks.current().with_tier(TierSpec("web", 50, 1, 1, 2, 256, 1))
    with pytest.raises(ValueError, match="min <= default <= max"):
        stacks.current().with_tier(TierSpec("queue", 50, 0, 1, 2, 256, 1))
    with pytest.raises(ValueError, match="unknown tier"):
        stacks.BUILT_IN.with_tier(CACHE, [Link("web", "search", 9200, "search")])
    with pytest.raises(ValueError, match="unknown"):
        stacks.BUILT_IN.with_tier(CACHE, presets={"nope": 1})


def test_register_tier_adds_a_kind_to_the_stack(monkeypatch):
    monkeypatch.setattr(stacks, "_registered", [stacks.BUILT_IN])
    monkeypatch.setattr(stacks, "_step_tiers_loaded", True)  # the step packages' own cache tier stays out
    stacks.register_tier(CACHE, [Link("web", "cache", 11211, "cache")])
    assert stacks.all_tiers() == ("lb", "web", "db", "cache")
    assert resolve({"tiers": {"cache": {"count": 1}}}, {}, platform="linux").host("cache1").tier == "cache"


# -- the links' questions ------------------------------------------------------------------------------------


def test_who_may_reach_each_host_on_which_port():
    topo = linux(overrides=Overrides(web=2))
    web_ips = ("192.168.56.21", "192.168.56.22")
    assert topo.inbound(topo.host("lb1"), "192.168.56.1") == (
        Opening(22, "ssh", ("192.168.56.1",)), Opening(80, "http", ("192.168.56.0/24",)),
        Opening(443, "https", ("192.168.56.0/24",)), Opening(8080, "http-plain", ("192.168.56.1",)))
    assert topo.inbound(topo.host("web2"), "192.168.56.1") == (
        Opening(22, "ssh", ("192.168.56.1",)), Opening(8000, "app", ("192.168.56.11",)))
    assert topo.inbound(topo.host("db1"), None) == (Opening(22, "ssh", ()), Opening(5432, "sql", web_ips))
    # Vagrant: lab's SSH comes over the VMs' management network, the bench's plain HTTP over the lab network
    both = ("192.168.121.1", "192.168.56.1")
    assert topo.inbound(topo.host("lb1"), "192.168.121.1")[::3] == (Opening(22, "ssh", both),
                                                                     Opening(8080, "http-plain", both))
    with_standby = linux(overrides=Overrides(web=2, counts={"db": 2}))
    assert with_standby.inbound(with_standby.host("db1"), None)[-1] == Opening(5432, "replication", ("192.168.56.32",))


def test_which_hosts_serve_each_link():
    topo = linux(overrides=Overrides(web=2))
    names = lambda hosts: [h.name for h in hosts]  # noqa: E731
    assert names(topo.serving("http")) == ["lb1"]
    assert names(topo.serving("app")) == ["web1", "web2"]
    assert names(topo.serving("app", client=topo.host("lb1"))) == ["web1", "web2"]
    assert names(topo.serving("app", client=topo.host("db1"))) == []
    assert names(topo.serving("sql", client=topo.host("web2"))) == ["db1"]
    assert names(topo.serving("ssh")) == ["lb1", "web1", "web2", "db1"]
    assert names(topo.clients(topo.host("db1"), "sql")) == ["web1", "web2"]
    assert names(topo.clients(topo.host("web1"), "app")) == ["lb1"]
    assert names(topo.clients(topo.host("lb1"), "http")) == ["lb1", "web1", "web2", "db1"]
    assert topo.port("sql", client=topo.host("web1")) == 5432
    with pytest.raises(TopologyError, match="link 'nope' has no port"):
        topo.port("nope")


# -- `lab up --preset` ---------------------------------------------------------------------------------------


def up_topology(args, capfd, monkeypatch):
    """The topology `lab up ARGS` would build (lifecycle.up stopped before any provider work)."""
    from lab import lifecycle
    from lab.testing import run_main

    resolved = []

    def resolve_only(project, overrides, *rest, **options):
        resolved.append(project.topology(overrides))
        return lifecycle.ConvergeReport([], 0.0)

    monkeypatch.setattr(lifecycle, "up", resolve_only)
    code, _, err = run_main(["up", *args], capfd)
    return code, err, resolved


def test_lab_up_preset_minimal_equals_the_default(no_lab, capfd, monkeypatch):
    _, _, [default] = up_topology([], capfd, monkeypatch)
    code, _, [minimal] = up_topology(["--preset", "minimal"], capfd, monkeypatch)
    assert code == 0 and minimal == default
    assert [h.name for h in minimal.hosts] == ["lb1", "web1", "db1"]
    _, _, [workshop] = up_topology(["--preset=workshop", "--web=3"], capfd, monkeypatch)
    assert workshop.count("web") == 3  # a flag beats the preset


@pytest.mark.parametrize(("args", "needle"), [(["--preset", "huge"], "--preset must be one of minimal, workshop, tuned, full"),
                                              (["--web=0"], "--web must be from 1 to 9")])
def test_lab_up_refuses_an_unknown_preset_or_zero_web_with_exit_3(no_lab, capfd, args, needle):
    from lab.testing import one_error_line, run_main

    code, _, err = run_main(["up", *args], capfd)
    assert code == 3
    assert needle in one_error_line(err)
    assert not (no_lab / ".lab").exists()
