"""Provisioning by recipes: the names provision/'s recipes are written with, and those `lab up` runs them by."""

from lab.recipes.discovery import PROJECT_ROOT, PROVISION_DIR, Recipe, Step, discover_steps, load_recipes, recipe
from lab.recipes.results import ConvergeReport, RecipeResult, raise_for_failures
from lab.recipes.scheduler import converge
from lab.recipes.target import RecipeError, Target, quoted

__all__ = [
    # for provision/stepN_*/recipes.py
    "PROJECT_ROOT", "RecipeError", "Target", "quoted", "recipe",
    # for `lab up`, `lab test` and their tests
    "PROVISION_DIR", "ConvergeReport", "Recipe", "RecipeResult", "Step", "converge", "discover_steps", "load_recipes",
    "raise_for_failures",
]
