"""Step 4 recipes: keep a few releases for rollback and remove the rest."""

from __future__ import annotations

from lab.recipes import Target, recipe
from provision.step1_bootstrap.recipes import CURRENT, RELEASES

KEEP_RELEASES = 3


@recipe(tiers=("web",))
def prune_releases(t: Target) -> None:
    current = t.run(f"readlink {CURRENT}").stdout.strip()
    newest_first = t.run(f"ls -1dt {RELEASES}/*/ 2>/dev/null", check=False).stdout.split()
    for folder in [f.rstrip("/") for f in newest_first][KEEP_RELEASES:]:
        if folder != current:
            t.run(f"rm -rf {folder}")
            t.changed(f"removed old release {folder.rsplit('/', 1)[-1]}")
