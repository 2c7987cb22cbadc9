"""Step 4 recipes: keep a few releases for rollback and remove the rest (`lab deploy`/`lab rollback`: lab/deploy.py)."""

from __future__ import annotations

import re

from lab.recipes import Target, recipe
from provision.step1_bootstrap.recipes import CURRENT, PREVIOUS, RELEASES, SITE_TIERS

KEEP_RELEASES = 3
DEPLOY_LOG = "/srv/bank/deploys.log"  # one line per switch of `current`: "<UTC time> <release> <how>", newest last
RELEASE_NAME = re.compile(r"^[0-9a-f]{12}$")  # app_archive()'s content hash; anything else is not a release


@recipe(tiers=SITE_TIERS)
def prune_releases(t: Target) -> None:
    current = t.run("readlink %s", CURRENT).stdout.strip()
    previous = t.run("readlink %s", PREVIOUS, check=False).stdout.strip()  # what `lab rollback` goes back to
    newest_first = [f.rstrip("/") for f in t.run(f"ls -1dt {RELEASES}/*/ 2>/dev/null", check=False).stdout.split()]
    releases = [f for f in newest_first if RELEASE_NAME.fullmatch(f.rsplit("/", 1)[-1])]
    # Renamed out of the releases first, then removed: an interrupted removal never leaves a half release
    # behind (its mtime, changed by the removal, would make it look like the newest one to keep).
    for folder in releases[KEEP_RELEASES:]:
        if folder not in (current, previous):
            removing = f"{folder}.removing"
            t.run("mv -T %s %s && rm -rf %s", folder, removing, removing)
            t.changed(f"removed old release {folder.rsplit('/', 1)[-1]}")
    # What interrupted runs left: a release being unpacked (`.tmp`, redone by its recipe) or being removed.
    for folder in newest_first:
        if folder.endswith((".tmp", ".removing")) and RELEASE_NAME.fullmatch(folder.rsplit("/", 1)[-1].rsplit(".", 1)[0]):
            t.run(t.locked(folder.rsplit(".", 1)[0], "rm -rf %s", folder))
            t.changed(f"removed {folder.rsplit('/', 1)[-1]}, left by an interrupted run")


def record_deploy(t: Target, release: str, how: str) -> None:
    """Append a line to the host's deploy log: which release `current` now names, and what switched it."""
    t.run("printf '%%s %%s %%s\\n' \"$(date -u +%%FT%%TZ)\" %s %s >> %s && chmod 644 %s", release, how, DEPLOY_LOG, DEPLOY_LOG)


def logged_release(t: Target) -> str:
    """The release the deploy log's last line names ("" without a log)."""
    last = t.run("tail -n 1 %s 2>/dev/null", DEPLOY_LOG, check=False).stdout.split()
    return last[1] if len(last) > 1 else ""


@recipe(tiers=SITE_TIERS)
def deploy_log(t: Target) -> None:
    """Every release `current` names is in the deploy log: `lab up` records the switches it made (`lab deploy`,
    `lab rollback` and `fab deploy` record their own)."""
    release = t.run("readlink %s", CURRENT).stdout.strip().rsplit("/", 1)[-1]
    if logged_release(t) != release:
        record_deploy(t, release, "lab-up")
        t.changed(f"recorded release {release} in {DEPLOY_LOG}")
