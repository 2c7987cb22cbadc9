"""The bank site's own Django tests, run in its own virtualenv (.venv-app, made by scripts/ensure-venv.sh --with-app)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APP_PYTHON = ROOT / ".venv-app" / "bin" / "python"


def test_site_unit_tests_pass(tmp_path: Path) -> None:
    if not APP_PYTHON.exists():
        if os.environ.get("CI"):
            pytest.fail("CI must run ./test.sh, which makes .venv-app")
        pytest.skip("no .venv-app: run ./test.sh (or scripts/ensure-venv.sh --with-app)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BANK_", "DJANGO_"))}
    env.update(BANK_DEV="1", HOME=str(tmp_path))
    result = subprocess.run(
        [str(APP_PYTHON), "manage.py", "test", "--noinput", "-v", "1"],
        cwd=ROOT / "app", env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK" in result.stderr.splitlines() and "Ran " in result.stderr
