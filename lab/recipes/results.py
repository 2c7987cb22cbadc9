"""What a converge reports: each recipe's outcome on each host, the summary line, and the error for failures."""

from __future__ import annotations

from dataclasses import dataclass, field

from lab.errors import ProvisionFailed


@dataclass
class RecipeResult:
    host: str
    recipe: str
    step: int
    status: str  # "changed" | "ok" | "failed" | "skipped"
    changes: list[str] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0


@dataclass
class ConvergeReport:
    results: list[RecipeResult]
    seconds: float

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def changes(self) -> int:
        return sum(len(r.changes) for r in self.results)

    def summary(self) -> str:
        if not self.results:  # `lab up --step 0`: the hosts alone
            return f"no recipe applied: the hosts are up with nothing provisioned (step 0) ({self.seconds:.1f} s)"
        hosts = len({r.host for r in self.results})
        parts = f"{self.count('changed')} changed, {self.count('ok')} ok, {self.count('failed')} failed, {self.count('skipped')} skipped"
        verdict = "no changes: the lab was already converged" if self.changes == 0 and not self.count("failed") else f"{self.changes} change{'s' if self.changes != 1 else ''}"
        return f"{len(self.results)} recipes on {hosts} hosts: {parts}; {verdict} ({self.seconds:.1f} s)"


class StepsDone:
    """Which workshop steps every host has finished, told from a converge's results as they arrive.

    Hosts run their chains independently, so db1 may still be in step 2 when the web hosts finish step 3: a step
    is announced only after every earlier one (step K done means the lab is at the end of step K, as `lab up
    --step K` would leave it), and each step once.
    """

    def __init__(self, expected: dict[int, int]) -> None:
        """expected: step → how many results it will have (one per recipe per host it applies to)."""
        self._waiting = {step: count for step, count in sorted(expected.items()) if count}
        self._results: dict[int, list[RecipeResult]] = {step: [] for step in self._waiting}

    def add(self, result: RecipeResult, seconds: float) -> list[str]:
        """The lines for the steps this result completes (none, or several at once), `seconds` into the converge."""
        if result.step not in self._waiting:
            return []
        self._results[result.step].append(result)
        self._waiting[result.step] -= 1
        lines = []
        while self._waiting and next(iter(self._waiting.values())) == 0:
            step = next(iter(self._waiting))
            del self._waiting[step]
            lines.append(step_line(step, self._results.pop(step), seconds))
        return lines


def step_line(step: int, results: list[RecipeResult], seconds: float) -> str:
    """"step 2 done on every host: 8 recipes, 3 changed; 23.1 s since the recipes began"."""
    changed = sum(1 for r in results if r.status == "changed")
    troubles = [f"{n} {status}" for status in ("failed", "skipped") if (n := sum(1 for r in results if r.status == status))]
    recipes = f"{len(results)} recipe{'s' if len(results) != 1 else ''}"
    if troubles:
        outcome = f"step {step} finished on every host: {', '.join(troubles)} of {recipes}"
    else:
        outcome = f"step {step} done on every host: {recipes}, {changed} changed"
    return f"{outcome}; {seconds:.1f} s since the recipes began"


def raise_for_failures(report: ConvergeReport) -> None:
    failed = [r for r in report.results if r.status == "failed"]
    if failed:
        first = failed[0]
        raise ProvisionFailed(
            f"{len(failed)} recipe(s) failed; first: {first.recipe} on {first.host}: {first.error}"
        )
