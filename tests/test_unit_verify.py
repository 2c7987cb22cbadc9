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


def test_a_check_of_a_tier_the_lab_has_no_host_of_is_skipped_saying_so(tmp_path):
    from lab import checkplugin
    from lab.topology import resolve

    folder = tmp_path / "step6_cache"
    folder.mkdir()
    (folder / "test_cache.py").write_text('TIERS = ("cache",)\n\ndef test_memcached_listens(host):\n    pass\n')
    topology = resolve({}, {}, platform="linux")  # lb1, web1, db1: no cache host
    from lab.state import LabDir

    context = checkplugin.CheckContext(LabDir(tmp_path / ".lab"), topology, None, frozenset(topology.stack.tiers))
    outcomes = _OutcomeCollector()
    code = pytest.main(["-q", "-p", "no:cacheprovider", "-p", "no:pytest11.testinfra", "--rootdir", str(tmp_path),
                        str(folder)], plugins=[checkplugin, context, outcomes])
    assert code == pytest.ExitCode.OK
    assert outcomes.skipped == [SkippedCheck("step6_cache/test_cache.py::test_memcached_listens[none]",
                                             "this lab has no cache host")]
