"""Unit tests for `lab failover db`: refused without a standby (one line, its own exit code, nothing touched), the
refused-writes arithmetic, and the prober's reading of the site's pages."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from lab import failover
from lab.cli import cli, main
from lab.failover import Attempt, NoStandby, refused_seconds
from lab.state import LabDir
from lab.topology import Overrides, resolve


def write_lab(folder, overrides: Overrides) -> LabDir:
    labdir = LabDir(folder / ".lab")
    labdir.ensure()
    labdir.write(dict(labdir.new_state(resolve({}, {}, overrides, platform="linux")), status="up"))
    return labdir


def test_failover_without_a_standby_is_refused_in_one_line(no_lab, capsys):
    labdir = write_lab(no_lab, Overrides(web=2))
    before = labdir.state_file.read_text()
    with pytest.raises(SystemExit) as exited:
        main(["failover", "db"])
    assert exited.value.code == NoStandby.exit_code == 65
    assert capsys.readouterr().err == ("lab: error: this lab has no standby to fail over to (db hosts: db1); "
                                       "`lab up --db=2` adds db2\n")
    assert labdir.state_file.read_text() == before  # nothing recorded, nothing touched


def test_failover_needs_a_lab(no_lab):
    result = CliRunner().invoke(cli, ["failover", "db"])
    assert result.exit_code != 0 and result.exit_code != 65


def test_refused_seconds_is_the_longest_stretch_without_a_confirmed_write():
    attempts = [Attempt(0.0, 0.1, True, "3.01"), Attempt(0.1, 0.2, True, "3.02"),
                Attempt(0.2, 2.0, False, "3.03"), Attempt(2.0, 3.2, True, "3.04"), Attempt(3.2, 3.3, True, "3.05")]
    assert abs(refused_seconds(attempts) - 3.0) < 1e-9  # 0.2 → 3.2
    assert refused_seconds([Attempt(0.0, 1.0, False, "3.01"), Attempt(1.0, 2.5, False, "3.02")]) == 2.5
    assert refused_seconds([]) == 0.0


def test_the_prober_reads_the_contracts_confirmation_and_the_forms_options():
    page = ('<p>Transferred 3.01</p><div id="transfer-confirmation" data-transfer-id="42" data-from="A1" '
            'data-from-balance="996.99" data-to="B2" data-to-balance="1003.01"></div>')
    assert failover.TRANSFER_ID.search(page).group(1) == "42"
    form = '<select><option value="">---</option><option value="A1">A1</option><option value="B2">B2</option></select>'
    assert [v for v in failover.OPTION.findall(form) if v] == ["A1", "B2"]
