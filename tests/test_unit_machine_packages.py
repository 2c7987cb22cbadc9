"""The manifest of machine packages: every package lab installs comes from it, and a missing one names itself."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lab import machine_packages, stack
from lab.errors import MissingDependency, NotUp, exit_code_for
from lab.lifecycle import Project
from lab.providers.vagrant import libvirt
from lab.providers.vagrant.driver import known_failure
from lab.state import LabDir
from lab.system import missing_packages
from lab.topology import resolve
from lab.testing import one_error_line, run_main

REPO = Path(__file__).resolve().parent.parent
PYTHON_DIRS = ("lab", "benchmarks", "tests", "provision")
SHELL_FILES = ("setup.sh", "test.sh", ".ci/run", *(str(p.relative_to(REPO)) for p in sorted((REPO / "scripts").glob("*.sh"))))
# The one installer of machine packages, and the one of the lab's hosts' packages (over SSH, by the recipes).
MACHINE_INSTALLER = "lab/system.py"
HOST_INSTALLER = "lab/recipes/target.py"
DEBIAN_NAME = re.compile(r"[a-z0-9][a-z0-9.+-]+")
LIBVIRT_NAT_FAILURE = (
    "==> lb1: Creating image (snapshot of base box volume).\n"
    "Error while activating network: Call to virNetworkCreate failed: Unable to find 'dnsmasq' binary in $PATH: "
    "No such file or directory.\n"
)


def manifest_packages() -> set[str]:
    return set(machine_packages.all_packages())


def python_files() -> list[Path]:
    return [p for d in PYTHON_DIRS for p in sorted((REPO / d).rglob("*.py")) if p.name != Path(__file__).name]


def named_after_apt_get_install(text: str) -> list[str]:
    """The package names that follow each `apt-get install` in a piece of text (options skipped, up to the first non-name)."""
    names = []
    for match in re.finditer(r"apt-get\s+(?:-\S+\s+)*install\b((?:\s+\S+)*)", text):
        for token in match.group(1).split():
            if token.startswith("-"):
                continue
            name = token.rstrip(",;.)")
            if not DEBIAN_NAME.fullmatch(name):
                break
            names.append(name)
            if name != token:
                break
    return names


# -- the manifest itself ------------------------------------------------------------------------------------------

def test_every_feature_says_why_and_names_debian_packages():
    features = machine_packages.manifest()["features"]
    assert {"lab", "tests", "local", "vagrant", "vagrant-libvirt", "box-build", "bench-wrk"} <= set(features)
    for name, feature in features.items():
        assert feature.get("why"), f"feature {name} says not why it is needed"
        assert feature["packages"], f"feature {name} names no package"
        for proof, package in feature["packages"].items():
            assert DEBIAN_NAME.fullmatch(package), (name, package)
            assert proof.startswith(("/", "python3:")) or "/" not in proof, (name, proof)


def test_libvirts_nat_network_and_vagrant_libvirt_needs_are_named():
    """Recommends-only packages the vagrant provider truly needs: --no-install-recommends brings none of them."""
    wanted = set(machine_packages.packages("vagrant-libvirt").values())
    assert {"dnsmasq-base", "iptables", "iproute2", "qemu-utils", "libvirt-daemon-system", "libvirt-clients",
            "qemu-system-x86", "vagrant-libvirt"} <= wanted
    assert machine_packages.package_providing("dnsmasq") == "dnsmasq-base"
    assert machine_packages.package_providing("no-such-program") is None


def test_the_hosts_section_lists_what_the_recipes_install():
    listed = machine_packages.manifest()["hosts"]
    found: dict[str, list[str]] = {}
    for recipes in sorted((REPO / "provision").glob("step*/recipes.py")):
        tree = ast.parse(recipes.read_text())
        constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
                     for t in n.targets if isinstance(t, ast.Name)}
        for call in ast.walk(tree):
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "packages":
                found.setdefault(recipes.parent.name, []).extend(_string_value(arg, constants) for arg in call.args)
    assert found == listed


def _string_value(node: ast.expr, constants: dict[str, object]) -> str:
    if isinstance(node, ast.Constant):
        return str(node.value)
    assert isinstance(node, ast.JoinedStr), ast.dump(node)
    return "".join(str(v.value) if isinstance(v, ast.Constant) else str(constants[v.value.id])  # type: ignore[union-attr]
                   for v in node.values)


# -- every install goes through the manifest ---------------------------------------------------------------------

def test_only_the_manifest_installs_machine_packages_from_python():
    """ensure_debian_packages is called by ensure_feature alone; every ensure_feature names a feature (and packages) of the manifest."""
    features = machine_packages.features()
    wrong = []
    for path in python_files():
        where = str(path.relative_to(REPO))
        tree = ast.parse(path.read_text())
        constants = _module_strings(tree)
        for call in ast.walk(tree):
            if not isinstance(call, ast.Call):
                continue
            name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
            if name == "ensure_debian_packages" and where != "lab/machine_packages.py":
                wrong.append(f"{where}:{call.lineno}: ensure_debian_packages called directly (use ensure_feature)")
            if name == "ensure_feature":
                feature = call.args[0] if call.args else None
                if not (isinstance(feature, ast.Constant) and feature.value in features):
                    wrong.append(f"{where}:{call.lineno}: ensure_feature of no feature in the manifest")
                    continue
                for keyword in call.keywords:
                    if keyword.arg in ("only", "without"):
                        for package in _strings(keyword.value, constants):
                            if package not in features[feature.value].values():
                                wrong.append(f"{where}:{call.lineno}: {package} is not in feature {feature.value}")
    assert not wrong, "\n".join(wrong)


def _module_strings(tree: ast.Module) -> dict[str, str]:
    return {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
            and isinstance(n.value.value, str) for t in n.targets if isinstance(t, ast.Name)}


def _strings(node: ast.expr, constants: dict[str, str]) -> list[str]:
    assert isinstance(node, (ast.List, ast.Tuple, ast.Set)), ast.dump(node)
    values = []
    for element in node.elts:
        if isinstance(element, ast.Constant):
            values.append(element.value)
        else:
            assert isinstance(element, ast.Name) and element.id in constants, ast.dump(element)
            values.append(constants[element.id])
    return values


def test_every_apt_get_install_in_python_is_the_installers_or_names_manifest_packages():
    """An apt-get install command runs only in the machine's installer (and the hosts' one); advice names manifest packages."""
    known = manifest_packages()
    wrong = []
    for path in python_files():
        where = str(path.relative_to(REPO))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.List, ast.Tuple)):
                words = [e.value for e in node.elts if isinstance(e, ast.Constant)]
                if "apt-get" in words and "install" in words and where != MACHINE_INSTALLER:
                    wrong.append(f"{where}:{node.lineno}: runs apt-get install itself")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and where != HOST_INSTALLER:
                wrong += [f"{where}:{node.lineno}: {name} is not in the manifest"
                          for name in named_after_apt_get_install(node.value) if name not in known]
    assert not wrong, "\n".join(wrong)


def test_the_machine_installer_never_takes_recommends():
    text = (REPO / MACHINE_INSTALLER).read_text()
    assert '"install", "-y", "-qq", "--no-install-recommends"' in text


def test_shell_scripts_install_only_manifest_packages():
    """Literal names must be in the manifest; a variable must hold what `python3 -m lab.machine_packages` printed."""
    known = manifest_packages()
    wrong = []
    for name in SHELL_FILES:
        text = (REPO / name).read_text()
        lines = text.splitlines()
        installers = _shell_functions_that_apt_get_install(lines)
        from_manifest = set(re.findall(r"(\w+)=\$\(python3 -m lab\.machine_packages (?:missing|packages) ", text))
        for number, line in enumerate(lines, 1):
            code = line.split("#", 1)[0]
            if "apt-get" in code and re.search(r"\binstall\b", code):
                if "--no-install-recommends" not in code:
                    wrong.append(f"{name}:{number}: apt-get install without --no-install-recommends")
                arguments = code.split("install", 1)[1].split(">")[0].split()
            else:
                called = [f for f in installers if re.search(rf"(^|[;&|(\s]){f}\s", code + " ")]
                if not called:
                    continue
                arguments = re.split(rf"\b{called[0]}\b", code, maxsplit=1)[1].split(">")[0].split()
            for argument in arguments:
                if argument.startswith("-") or argument == '"$@"':
                    continue
                variable = re.fullmatch(r'"?\$\{?(\w+)\}?"?', argument)
                if variable:
                    if variable.group(1) not in from_manifest:
                        wrong.append(f"{name}:{number}: ${variable.group(1)} does not come from the manifest")
                elif argument not in known:
                    wrong.append(f"{name}:{number}: {argument} is not in the manifest")
    assert not wrong, "\n".join(wrong)


def _shell_functions_that_apt_get_install(lines: list[str]) -> list[str]:
    functions, current = [], None
    for line in lines:
        started = re.match(r"\s*(\w+)\s*\(\)\s*\{", line)
        if started:
            current = started.group(1)
        elif line.startswith("}"):
            current = None
        elif current and "apt-get" in line and "install" in line and '"$@"' in line:
            functions.append(current)
    return functions


def test_the_scan_catches_a_package_from_outside_the_manifest():
    """The checks above can fail: advice or a command naming a package the manifest lacks is found."""
    assert named_after_apt_get_install("run: apt-get install -y --no-install-recommends cowsay, then retry") == ["cowsay"]
    assert named_after_apt_get_install("apt-get install vagrant vagrant-libvirt (Debian/Ubuntu)") == ["vagrant", "vagrant-libvirt"]
    assert "cowsay" not in manifest_packages()


# -- installing a feature ------------------------------------------------------------------------------------------

def test_ensure_feature_passes_the_manifests_packages_to_the_one_installer(monkeypatch):
    asked = []
    monkeypatch.setattr(machine_packages, "ensure_debian_packages", lambda packages, say: asked.append(packages))
    machine_packages.ensure_feature("bench-wrk", print)
    machine_packages.ensure_feature("vagrant-libvirt", print, only=["vagrant-libvirt"])
    machine_packages.ensure_feature("vagrant-libvirt", print, without=["vagrant-libvirt"])
    assert asked[0] == {"wrk": "wrk"}
    assert set(asked[1].values()) == {"vagrant-libvirt"}
    assert "vagrant-libvirt" not in asked[2].values() and "dnsmasq-base" in asked[2].values()
    with pytest.raises(KeyError):
        machine_packages.ensure_feature("no-such-feature", print)
    with pytest.raises(KeyError):
        machine_packages.ensure_feature("bench-wrk", print, only=["curl"])


def test_the_vagrant_providers_preflight_installs_dnsmasq(monkeypatch):
    asked: dict[str, str] = {}
    monkeypatch.setattr(machine_packages, "ensure_debian_packages", lambda packages, say: asked.update(packages))
    monkeypatch.setattr(libvirt, "_plugin_installed", lambda: True)
    monkeypatch.setattr(libvirt, "_kvm_device_for_libvirt", lambda say: None)
    monkeypatch.setattr(libvirt, "start_libvirt", lambda say: None)
    libvirt.ensure_libvirt(print)
    assert asked["dnsmasq"] == "dnsmasq-base"
    assert asked["vagrant"] == "vagrant"


def test_dnsmasq_that_cannot_be_installed_is_exit_9_naming_it(monkeypatch):
    def apt_refuses(packages, say):
        missing = sorted({p for p in packages.values() if p == "dnsmasq-base"})
        if missing:
            raise MissingDependency(f"could not install {' '.join(missing)}: E: Unable to locate package dnsmasq-base")

    monkeypatch.setattr(machine_packages, "ensure_debian_packages", apt_refuses)
    monkeypatch.setattr(libvirt, "_plugin_installed", lambda: True)
    with pytest.raises(MissingDependency) as caught:
        libvirt.ensure_libvirt(print)
    assert exit_code_for(caught.value) == 9 and "dnsmasq-base" in str(caught.value)


def test_missing_packages_reads_every_kind_of_proof(tmp_path):
    present = tmp_path / "here"
    present.write_text("")
    assert missing_packages({
        "sh": "dash", str(present): "a", str(tmp_path / "absent"): "b",
        "python3:json": "c", "python3:no_such_module_here": "d", "no-such-program-here": "e",
    }) == ["b", "d", "e"]


def test_the_shell_reads_the_manifest_with_python3():
    def module(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lab.machine_packages", *args], cwd=REPO, capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=str(REPO)))

    listed = module("packages", "lab")
    assert listed.returncode == 0 and listed.stdout.split() == ["openssh-client", "python3", "python3-venv"]
    everything = module("packages", "--all").stdout.split()
    assert "dnsmasq-base" in everything and everything == sorted(set(everything))
    assert module("missing", "lab").returncode == 0
    refused = module("missing", "no-such-feature")
    assert refused.returncode == 2 and "no-such-feature" in refused.stderr


# -- libvirt's own words for a missing program ---------------------------------------------------------------------

def test_libvirts_missing_dnsmasq_becomes_exit_9_naming_the_package():
    error = known_failure(LIBVIRT_NAT_FAILURE, Path("/lab/.lab/logs/vagrant.log"))
    assert isinstance(error, MissingDependency) and exit_code_for(error) == 9
    message = str(error)
    assert "dnsmasq-base" in message and "virNetworkCreate" not in message and "\n" not in message


def test_a_missing_program_the_manifest_does_not_know_is_still_named():
    error = known_failure("Error: Unable to find 'swtpm' binary in $PATH: No such file or directory", Path("vagrant.log"))
    assert isinstance(error, MissingDependency) and exit_code_for(error) == 9
    assert "swtpm" in str(error)


# -- after an unfinished `lab up` -----------------------------------------------------------------------------------

def test_an_unfinished_lab_up_says_to_run_lab_up_again(tmp_path, monkeypatch, capfd):
    for key in list(os.environ):
        if key.startswith("LAB_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    labdir = LabDir(tmp_path / ".lab")
    labdir.ensure()
    labdir.write(labdir.new_state(resolve({"lab": {"name": "unfinished", "provider": "local"}}, {})))
    assert Project.here().labdir.read()["status"] == "creating"
    code, _, err = run_main(["test"], capfd)
    line = one_error_line(err)
    assert code == NotUp.exit_code == 7
    assert "did not finish" in line and "lab up" in line and "lab destroy" in line and "creating" not in line


# -- scripts/fresh-machine.sh: what it refuses before touching anything ------------------------------------------------

FRESH = REPO / "scripts" / "fresh-machine.sh"


def fresh_machine(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(FRESH), *args], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)


def test_fresh_machine_knows_every_tier_a_vm_can_be_named_after():
    tiers = re.search(r'^TIERS="([^"]*)"', FRESH.read_text(), re.MULTILINE)
    assert tiers and set(tiers.group(1).split("|")) == set(stack.current().tiers)


def test_fresh_machine_keeps_what_the_base_image_needs():
    keep = re.search(r"^KEEP=\(([^)]*)\)", FRESH.read_text(), re.MULTILINE)
    assert keep and {"python3", "openssh-client", "git", "ca-certificates"} <= set(keep.group(1).split())
    assert subprocess.run(["bash", "-n", str(FRESH)]).returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="fresh-machine.sh runs as root only")
@pytest.mark.parametrize(("args", "needle"), [
    ((), "pass --yes"),                      # no terminal to ask: refuses rather than removes
    (("--bogus",), "unknown option --bogus"),
    (("--lab", "Not A Name"), "--lab needs a lab's name"),
    (("--lab", "x", "--run"), "--run needs the whole machine"),
])
def test_fresh_machine_refuses_before_removing_anything(args, needle):
    result = fresh_machine(*args)
    assert result.returncode == 2 and needle in result.stderr
    assert "removing" not in result.stdout
