"""Step 4 recipes: keep a few releases for rollback and remove the rest."""

from __future__ import annotations

import re

from lab.recipes import Target, recipe
from provision.step1_bootstrap.recipes import CURRENT, RELEASES

KEEP_RELEASES = 3
RELEASE_NAME = re.compile(r"^[0-9a-f]{12}$")  # app_archive()'s content hash; anything else is not a release


@recipe(tiers=("web",))
def prune_releases(t: Target) -> None:
    current = t.run("readlink %s", CURRENT).stdout.strip()
    newest_first = [f.rstrip("/") for f in t.run(f"ls -1dt {RELEASES}/*/ 2>/dev/null", check=False).stdout.split()]
    releases = [f for f in newest_first if RELEASE_NAME.match(f.rsplit("/", 1)[-1])]
    # Renamed out of the releases first, then removed: an interrupted removal never leaves a half release
    # behind (its mtime, changed by the removal, would make it look like the newest one to keep).
    for folder in releases[KEEP_RELEASES:]:
        if folder != current:
            removing = f"{folder}.removing"
            t.run("mv -T %s %s && rm -rf %s", folder, removing, removing)
            t.changed(f"removed old release {folder.rsplit('/', 1)[-1]}")
    # What interrupted runs left: a release being unpacked (`.tmp`, redone by its recipe) or being removed.
    for folder in newest_first:
        if folder.endswith((".tmp", ".removing")) and RELEASE_NAME.match(folder.rsplit("/", 1)[-1].rsplit(".", 1)[0]):
            t.run(t.locked(folder.rsplit(".", 1)[0], "rm -rf %s", folder))
            t.changed(f"removed {folder.rsplit('/', 1)[-1]}, left by an interrupted run")
