"""Step 3 recipes: static files collected, and Gunicorn as a systemd service bound to the host's private IP."""

from __future__ import annotations

from lab.recipes import Target, recipe
from provision.step1_bootstrap.recipes import APP_USER, CURRENT, VENV
from provision.step2_database.recipes import SETTINGS, STATIC_ROOT, manage

APP_PORT = 8000
GUNICORN_WORKERS = 2


@recipe(tiers=("web",))
def static_files(t: Target) -> None:
    """collectstatic once per release: a marker names the release the static tree was collected from."""
    release = t.run(f"readlink {CURRENT}").stdout.strip()
    marker = f"{STATIC_ROOT}/.lab-release"
    t.directory(STATIC_ROOT, 0o755, APP_USER, APP_USER)
    if t.run(f"cat {marker} 2>/dev/null", check=False).stdout.strip() == release:
        return
    t.run(manage("collectstatic --noinput --clear -v 0"), user=APP_USER)
    t.run(f"echo {release} > {marker}", user=APP_USER)
    t.changed(f"collected static files for {release.rsplit('/', 1)[-1]}", "static")


@recipe(tiers=("web",))
def gunicorn(t: Target) -> None:
    unit_changed = t.template(
        "/etc/systemd/system/gunicorn.service", "step3_appserver/templates/gunicorn.service.j2",
        user=APP_USER, current=CURRENT, settings=SETTINGS, venv=VENV, port=APP_PORT, workers=GUNICORN_WORKERS,
    )
    if unit_changed:
        t.run("systemctl daemon-reload")
    t.service("gunicorn", restart=unit_changed or t.notified("app-code", "app-config"))
    t.wait_for_port(t.host.ip, APP_PORT)
