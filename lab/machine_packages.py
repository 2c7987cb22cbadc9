"""The manifest of every machine package lab needs (lab/machine-packages.toml), by feature, and installing a feature.

Python reads it here (ensure_feature); the shell scripts through `python3 -m lab.machine_packages`, which needs
nothing but the standard library, so it runs before lab's venv exists:

    python3 -m lab.machine_packages missing lab tests   # the Debian packages of these features not installed yet
    python3 -m lab.machine_packages packages --all      # every machine package in the manifest
"""

from __future__ import annotations

import functools
import sys
import tomllib
from pathlib import Path
from typing import Any, Iterable

from lab.system import Say, ensure_debian_packages, missing_packages

MANIFEST = Path(__file__).with_name("machine-packages.toml")


@functools.cache
def manifest() -> dict[str, Any]:
    with open(MANIFEST, "rb") as handle:
        return tomllib.load(handle)


def features() -> dict[str, dict[str, str]]:
    """Each feature's packages: what proves a package is there → the Debian package."""
    return {name: dict(feature["packages"]) for name, feature in manifest()["features"].items()}


def packages(feature: str, only: Iterable[str] = (), without: Iterable[str] = ()) -> dict[str, str]:
    """A feature's packages (proof → package); only: just these of its packages; without: all but these."""
    known = features()
    if feature not in known:
        raise KeyError(f"no feature {feature!r} in {MANIFEST.name} (it has {', '.join(known)})")
    wanted = known[feature]
    only, without = set(only), set(without)
    strays = (only | without) - set(wanted.values())
    if strays:
        raise KeyError(f"feature {feature!r} in {MANIFEST.name} has no package {', '.join(sorted(strays))}")
    return {proof: package for proof, package in wanted.items()
            if (not only or package in only) and package not in without}


def ensure_feature(feature: str, say: Say, only: Iterable[str] = (), without: Iterable[str] = ()) -> None:
    """Install the feature's Debian packages that are missing (MissingDependency, exit 9, naming them, if that fails)."""
    ensure_debian_packages(packages(feature, only, without), say)


def package_providing(program: str) -> str | None:
    """The Debian package the manifest names for a program ("dnsmasq" → "dnsmasq-base"), or None."""
    for wanted in features().values():
        if program in wanted:
            return wanted[program]
    return None


def all_packages() -> list[str]:
    """Every machine package in the manifest, once each."""
    return sorted({package for wanted in features().values() for package in wanted.values()})


def main(argv: list[str]) -> int:
    usage = "usage: python3 -m lab.machine_packages {missing FEATURE... | packages FEATURE... | packages --all}"
    if len(argv) < 2 or argv[0] not in ("missing", "packages"):
        print(usage, file=sys.stderr)
        return 2
    verb, names = argv[0], argv[1:]
    try:
        if verb == "packages" and names == ["--all"]:
            found = all_packages()
        else:
            chosen = {proof: package for name in names for proof, package in packages(name).items()}
            found = missing_packages(chosen) if verb == "missing" else sorted(set(chosen.values()))
    except KeyError as error:
        print(f"lab.machine_packages: {error.args[0]}", file=sys.stderr)
        return 2
    print("\n".join(found))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
