"""Step 6 recipes for loadgen hosts: Locust in a venv of its own, the machine's version, run by an unprivileged user."""

from __future__ import annotations

import importlib.metadata

from lab.recipes import Target, recipe

LOCUST_USER = "locust"
LOCUST_HOME = "/opt/locust"
LOCUST_VENV = f"{LOCUST_HOME}/venv"
LOCUST_BIN = f"{LOCUST_VENV}/bin/locust"
VENV_MARKER = f"{LOCUST_VENV}/.lab-complete"  # written last: a venv without it is half-made
# Where lab.bench.distributed puts a run's locustfile and environment (0600, the worker's user only).
RUN_DIR = f"{LOCUST_HOME}/run"
WORKER_UNIT = "lab-locust-worker"


def machine_locust_version() -> str:
    """The Locust the machine's master runs: a worker of another version may be refused or misbehave."""
    return importlib.metadata.version("locust")


@recipe(tiers=("loadgen",))
def locust_user(t: Target) -> None:
    if not t.test("id -u %s", LOCUST_USER):
        t.run("useradd --system --home-dir %s --no-create-home --shell /usr/sbin/nologin %s", LOCUST_HOME, LOCUST_USER)
        t.changed(f"created system user {LOCUST_USER}")
    t.directory(LOCUST_HOME, 0o755, "root", "root")
    t.directory(RUN_DIR, 0o700, LOCUST_USER, LOCUST_USER)


@recipe(tiers=("loadgen",))
def locust(t: Target) -> None:
    """Locust pinned to the machine's version, installed through the lab's proxy."""
    t.packages("python3-venv")
    if t.completed(VENV_MARKER, "rm -rf %s && python3 -m venv %s", LOCUST_VENV, LOCUST_VENV):
        t.changed(f"created virtualenv {LOCUST_VENV}")
    version = machine_locust_version()
    if t.test("%s --version 2>/dev/null | grep -qwF %s", LOCUST_BIN, version):
        return
    t.run(t.locked(VENV_MARKER, "%s/bin/pip install -q %s", LOCUST_VENV, f"locust=={version}"))
    t.changed(f"installed locust {version}")
