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
        hosts = len({r.host for r in self.results})
        parts = f"{self.count('changed')} changed, {self.count('ok')} ok, {self.count('failed')} failed, {self.count('skipped')} skipped"
        verdict = "no changes: the lab was already converged" if self.changes == 0 and not self.count("failed") else f"{self.changes} change{'s' if self.changes != 1 else ''}"
        return f"{len(self.results)} recipes on {hosts} hosts: {parts}; {verdict} ({self.seconds:.1f} s)"


def raise_for_failures(report: ConvergeReport) -> None:
    failed = [r for r in report.results if r.status == "failed"]
    if failed:
        first = failed[0]
        raise ProvisionFailed(
            f"{len(failed)} recipe(s) failed; first: {first.recipe} on {first.host}: {first.error}"
        )
