"""Unit tests for lab.bench.money with a fake web host: customers made with the password on stdin only, the bank's
total read from bank_total's JSON, and the report's conservation line."""
from __future__ import annotations

import json
from decimal import Decimal
from types import SimpleNamespace

import pytest

from lab.bench import money
from lab.errors import BenchError
from lab.remote import CommandResult

PASSWORD = "s3cret-demo 'pass\"word"


class FakeLabDir:
    def __init__(self, topology):
        self.topology = topology

    def read(self):
        return {"status": "up", "topology": self.topology.to_dict()}

    def secrets(self):
        return {"demo_password": PASSWORD}


class FakeHost:
    """Records what would run on the host; answers like the site's management commands."""

    runs: list = []

    def __init__(self, labdir, name, replies=None):
        self.name = name
        self.replies = replies or {}
        self.closed = False

    def run(self, command, user=None, timeout=None, stdin=None):
        FakeHost.runs.append(SimpleNamespace(host=self.name, command=command, user=user, stdin=stdin))
        for word, reply in self.replies.items():
            if word in command:
                return reply
        return CommandResult(command, 0, "", "")

    def close(self):
        self.closed = True


@pytest.fixture
def project(topology):
    FakeHost.runs = []
    return SimpleNamespace(labdir=FakeLabDir(topology))


def test_customers_are_made_on_the_first_web_host_as_the_app_user_with_the_password_on_stdin(project):
    money.ensure_customers(project, 32, connect=FakeHost)
    [call] = FakeHost.runs
    assert call.host == "web1" and call.user == "bank"
    assert "manage.py load_sample_data --customers 32" in call.command
    assert "BANK_CONFIG=/etc/bank/bank.toml" in call.command
    assert PASSWORD not in call.command  # never on a command line: ps would show it
    assert call.stdin == PASSWORD + "\n"
    assert call.command.startswith("IFS= read -r BANK_DEMO_PASSWORD && export BANK_DEMO_PASSWORD && ")


@pytest.mark.parametrize("count", [0, -1, 10000])
def test_a_customer_count_out_of_range_is_refused_before_anything_runs(project, count):
    with pytest.raises(BenchError, match="1 to 9999 users"):
        money.ensure_customers(project, count, connect=FakeHost)
    assert FakeHost.runs == []


def test_a_failed_load_names_the_host_and_the_last_line_without_the_password(project):
    failing = {"load_sample_data": CommandResult("x", 1, "", "Traceback...\nCommandError: no such option --customers\n")}
    with pytest.raises(BenchError, match=r"on web1: CommandError: no such option --customers$") as caught:
        money.ensure_customers(project, 2, connect=lambda labdir, name: FakeHost(labdir, name, failing))
    assert PASSWORD not in str(caught.value)


def test_the_total_is_read_from_bank_totals_json_line(project):
    line = json.dumps({"total": "64000.00", "accounts": 64, "transfers": 7})
    replies = {"bank_total": CommandResult("x", 0, "some warning\n" + line + "\n", "")}
    connect = lambda labdir, name: FakeHost(labdir, name, replies)  # noqa: E731
    assert money.total_balance(project, connect=connect) == Decimal("64000.00")
    assert money.bank_state(project, connect=connect) == {"total": Decimal("64000.00"), "accounts": 64, "transfers": 7}
    assert all(call.user == "bank" and "manage.py bank_total" in call.command for call in FakeHost.runs)


@pytest.mark.parametrize("stdout", ["", "not json\n", '{"accounts": 3}\n', '{"total": "lots", "accounts": 1, "transfers": 0}\n'])
def test_a_total_that_cannot_be_read_is_a_bench_error_not_a_number(project, stdout):
    replies = {"bank_total": CommandResult("x", 0, stdout, "")}
    with pytest.raises(BenchError, match="bank_total on web1"):
        money.total_balance(project, connect=lambda labdir, name: FakeHost(labdir, name, replies))


def test_conservation_says_conserved_or_shows_the_difference():
    assert money.conservation(Decimal("64000.00"), Decimal("64000.00")) == "money conserved (total 64000.00)"
    assert money.conservation(Decimal("64000.00"), Decimal("63990.00")) == (
        "money NOT conserved: total 64000.00 before, 63990.00 after (-10.00)")
