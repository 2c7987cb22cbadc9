"""The workshop's steps and their recipes, as found in provision/: what `lab up`, `lab up --step` and `lab test` go by."""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from lab.topology import Host, Topology

if TYPE_CHECKING:
    from lab.recipes.target import BalancerPool, Target

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROVISION_DIR = PROJECT_ROOT / "provision"
BALANCER_POOL_ATTRIBUTE = "BALANCER_POOL"  # the recipes module of the step that balances the web tier defines it


@dataclass(frozen=True)
class Recipe:
    """A named, idempotent piece of provisioning, introduced by one workshop step."""

    name: str  # "<step folder>.<function>", unique
    step: int
    tiers: tuple[str, ...]
    func: Callable[["Target"], None]
    requires: tuple[str, ...] = ()
    first_only: bool = False  # run on the tier's first host only (migrations, sample data)
    after: tuple[str, ...] = ()  # recipes that must have finished everywhere first, whether or not they succeeded
    until_step: int | None = None  # part of a converge only when it stops at this step or before (a later step replaces it)

    def applies_to(self, host: Host, topology: Topology) -> bool:
        if host.tier not in self.tiers:
            return False
        return not self.first_only or topology.tier(host.tier)[0].name == host.name


def recipe(tiers: Iterable[str], requires: Iterable[str] = (), first_only: bool = False, after: Iterable[str] = (),
           until_step: int | None = None):
    """Mark a function in provision/stepN_*/recipes.py as a recipe (collected in definition order).

    `requires`: skipped unless those recipes succeeded everywhere; `after`: runs once they finished everywhere,
    successful or not (the recipe itself looks at what they left, e.g. which web hosts answer). `until_step`: what
    the workshop has an attendee build first and a later step replaces (step 1's development server, replaced by
    step 3's app server): only a `lab up --step K` with K at most until_step runs it.
    """

    def mark(func: Callable[["Target"], None]) -> Callable[["Target"], None]:
        func.lab_recipe = {"tiers": tuple(tiers), "requires": tuple(requires), "first_only": first_only,  # type: ignore[attr-defined]
                           "after": tuple(after), "until_step": until_step}
        return func

    return mark


@dataclass(frozen=True)
class Step:
    number: int
    title: str
    package: str  # e.g. "provision.step2_database"

    @property
    def folder(self) -> Path:
        return PROVISION_DIR / self.package.rsplit(".", 1)[1]


def discover_steps() -> list[Step]:
    """The workshop's steps, one folder each: provision/stepN_name/ with recipes.py and checks."""
    steps = []
    for folder in sorted(PROVISION_DIR.glob("step[0-9]*_*")):
        module = importlib.import_module(f"provision.{folder.name}")
        steps.append(Step(number=module.STEP, title=module.TITLE, package=f"provision.{folder.name}"))
    return sorted(steps, key=lambda s: s.number)


def load_recipes(max_step: int | None = None) -> list[Recipe]:
    recipes: list[Recipe] = []
    for step in discover_steps():
        if max_step is not None and step.number > max_step:
            continue
        module = importlib.import_module(f"{step.package}.recipes")
        for attribute in vars(module).values():
            spec = getattr(attribute, "lab_recipe", None)
            if spec is not None and getattr(attribute, "__module__", None) == module.__name__:
                if spec["until_step"] is not None and (max_step is None or max_step > spec["until_step"]):
                    continue  # replaced by a later step this converge includes
                recipes.append(Recipe(name=f"{step.folder.name}.{attribute.__name__}", step=step.number, func=attribute, **spec))
    names = [r.name for r in recipes]
    for index, r in enumerate(recipes):
        for needed in r.requires + r.after:
            if needed not in names[:index]:
                raise ValueError(f"recipe {r.name} requires {needed}, which is not an earlier recipe")
    return recipes


def balancer_pool(recipes: Iterable[Recipe]) -> BalancerPool | None:
    """The BALANCER_POOL of the loaded steps, if one of them balances the web tier (none with --step below it)."""
    for module_name in dict.fromkeys(r.func.__module__ for r in recipes):
        pool = getattr(sys.modules[module_name], BALANCER_POOL_ATTRIBUTE, None)
        if pool is not None:
            return pool
    return None
