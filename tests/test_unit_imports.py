"""Unit tests for the import graph of lab/ and provision/: no cycles, and recipes and checks never reach a provider.

Every module is parsed with ast, never imported. An edge A → B means A's code imports B, wherever the import
statement is: at module level, inside a function (a deferred import still ties A to B: it only moves the cycle
from import time to call time), or under `if TYPE_CHECKING:` (a dependency for annotations is still one: A cannot
be read, or moved, without B). `from P import m` is an edge to P.m when m is a module, else to P, whose code supplies
the name. The packages Python initialises on the way (`import a.b.c` runs a/__init__ and a/b/__init__ first) count
too, but for the importing module's own packages: they are initialised before it runs (or are importing it), and
every package whose __init__ imports its own children would otherwise be a cycle.
"""
from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lab", "provision")
# What recipes and checks run with: the modules `lab up` and `lab test` hand to provision/ code, and the plugin
# giving checks their fixtures. Neither they nor anything they import may know which provider made a host.
HOST_SIDE = ("lab.recipes", "lab.verify", "lab.checkplugin", "lab.hostcheck", "lab.hosts", "lab.remote")


def module_files() -> dict[str, Path]:
    """Every module of lab/ and provision/ by dotted name (a package by its own name, for its __init__.py)."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: Path, modules: set[str]) -> dict[str, int]:
    """The modules among `modules` that a module's import statements import, wherever they are, with the first line."""
    is_package = path.name == "__init__.py"
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # `from P import m`: the submodule P.m when there is one, else P, whose own code defines the name
            targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]  # `import lab.x.y` of a non-module: its nearest module
            parts = target.split(".")
            for depth in range(1, len(parts) + 1):
                package_or_module = ".".join(parts[:depth])
                own = name == package_or_module or name.startswith(package_or_module + ".")
                if package_or_module in modules and not own:
                    found.setdefault(package_or_module, node.lineno)
    return found


@cache
def import_graph() -> dict[str, dict[str, int]]:
    """module → {imported module of lab/ or provision/ → line of the first import statement naming it}; read once."""
    modules = module_files()
    return {name: imported_modules(name, path, set(modules)) for name, path in modules.items()}


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan), each as one cycle through all of it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [cycle_through(graph, group) for group in groups]


def cycle_through(graph: dict[str, dict[str, int]], group: list[str]) -> list[str]:
    """One import path from the group's first module back to itself, inside the group (breadth first: the shortest)."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node]):
            if nxt == start:
                return paths[node] + [start]
            if nxt in members and nxt not in paths:
                paths[nxt] = paths[node] + [nxt]
                queue.append(nxt)
    return group  # unreachable for a strongly connected group


def describe(graph: dict[str, dict[str, int]], cycle: list[str]) -> str:
    return " → ".join(f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" → {cycle[-1]}"


def test_the_graph_sees_every_kind_of_import(tmp_path):
    """The parser counts module-level, function-level, relative and TYPE_CHECKING imports, and submodules of `from`."""
    source = (
        "from __future__ import annotations\nfrom typing import TYPE_CHECKING\nimport lab.errors\n"
        "from lab.providers import base\nfrom . import system\n"
        "if TYPE_CHECKING:\n    from lab.bench import BenchResult\n"
        "def later():\n    from lab.topology import Topology\n"
    )
    module = tmp_path / "example.py"
    module.write_text(source)
    modules = {"lab", "lab.errors", "lab.providers", "lab.providers.base", "lab.system", "lab.bench", "lab.topology"}
    assert set(imported_modules("lab.example", module, modules)) == modules - {"lab"}  # lab.providers: base's package


def test_find_cycles_names_each_cycle():
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}, "e": {"f": 5}, "f": {"e": 6}}
    cycles = find_cycles(graph)
    assert cycles == [["a", "b", "c", "a"], ["e", "f", "e"]]
    assert describe(graph, cycles[1]) == "e (line 5) → f (line 6) → e"


def test_every_module_is_in_the_graph():
    graph = import_graph()
    assert {"lab.cli", "lab.providers.local", "lab.providers.vagrant.box", "provision.step1_bootstrap.recipes"} <= set(graph)
    assert "lab.errors" in graph["lab.cli"]  # a sanity check of the edges themselves


def test_no_import_cycles():
    graph = import_graph()
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(describe(graph, cycle) for cycle in cycles)


def host_side_modules(graph: dict[str, dict[str, int]]) -> set[str]:
    """provision/'s modules, HOST_SIDE, and everything they import, directly or not."""
    seen: set[str] = set()
    todo = [m for m in graph if m.startswith("provision")] + list(HOST_SIDE)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += graph[module]
    return seen


@pytest.mark.parametrize("module", sorted(host_side_modules(import_graph())))
def test_recipes_and_checks_never_import_a_provider(module):
    graph = import_graph()
    providers = {target: line for target, line in graph[module].items()
                 if target == "lab.providers" or target.startswith("lab.providers.")}
    assert not providers, f"{module} imports {', '.join(f'{t} (line {n})' for t, n in providers.items())}"


def test_providers_do_not_reach_into_each_other():
    """What two providers share lives in lab.machine (paths, network, Debian rootfs), never in one of them."""
    graph = import_graph()
    crossings = []
    for module, targets in graph.items():
        own = module.split(".")[2] if module.startswith("lab.providers.") else None
        for target, line in targets.items():
            other = target.split(".")[2] if target.startswith("lab.providers.") else None
            if own and other and own != "base" and other not in ("base", own):
                crossings.append(f"{module} imports {target} (line {line})")
    assert not crossings, "; ".join(crossings)


def test_the_test_helpers_are_not_part_of_lab_itself():
    """lab.testing (the runner of tests and benchmarks) imports lab.cli; nothing of lab's own may import it back."""
    graph = import_graph()
    assert [module for module, targets in graph.items() if "lab.testing" in targets] == []
