"""Unit tests for lab.verify's outcome collector: failed checks named, skipped checks named with pytest's reason."""
from __future__ import annotations

import pytest

from lab.verify import SkippedCheck, _OutcomeCollector

CHECKS = '''
import pytest

def test_passes():
    pass

@pytest.fixture
def on_mod_wsgi():
    pytest.skip("this lab runs gunicorn")  # as provision/step3_appserver's checks skip: in a fixture (setup)

@pytest.mark.usefixtures("on_mod_wsgi")
@pytest.mark.parametrize("host", ["web1", "web2"])
def test_apache_enabled_and_running(host):
    pass

def test_skips_itself():
    pytest.skip("no balancer in this lab")

def test_fails():
    assert False
'''


def test_collector_names_failed_and_skipped_checks_with_the_reason(tmp_path):
    folder = tmp_path / "step3_appserver"
    folder.mkdir()
    (folder / "test_web.py").write_text(CHECKS)
    outcomes = _OutcomeCollector()
    code = pytest.main(["-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(folder)], plugins=[outcomes])
    assert code == pytest.ExitCode.TESTS_FAILED
    assert outcomes.failed == ["step3_appserver/test_web.py::test_fails"]
    assert outcomes.skipped == [
        SkippedCheck("step3_appserver/test_web.py::test_apache_enabled_and_running[web1]", "this lab runs gunicorn"),
        SkippedCheck("step3_appserver/test_web.py::test_apache_enabled_and_running[web2]", "this lab runs gunicorn"),
        SkippedCheck("step3_appserver/test_web.py::test_skips_itself", "no balancer in this lab"),
    ]
