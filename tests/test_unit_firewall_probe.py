"""Unit tests for the firewall check's probe (provision/step1_bootstrap/test_firewall.py), fed fake connects and ARP.

The probe tells a port the firewall refuses (filtered: silence; rejected: an ICMP error) from a host that is not
there at all (it never answered ARP, or there is no route): only a host with a link-layer address in the neighbour
table can have a firewall that answered. Here it gets the errors a connect raises and the lines `ip neigh show to IP`
prints, first to its pure functions, then to the very script PROBE sends to the host, with socket and ip faked.
"""
from __future__ import annotations

import errno
import itertools
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from provision.step1_bootstrap import test_firewall as check
from provision.step1_bootstrap.test_firewall import REFUSED_BY_FIREWALL, answered_arp, classify, connect_outcome

IP = "192.168.56.21"

# What `ip neigh show to IP` prints for a host that answered ARP (it has a link-layer address) ...
ANSWERED = {
    "REACHABLE": f"{IP} dev br-lab lladdr 52:54:00:0a:0b:0c REACHABLE\n",
    "STALE": f"{IP} dev br-lab lladdr 52:54:00:0a:0b:0c STALE\n",
    "DELAY": f"{IP} dev br-lab lladdr 52:54:00:0a:0b:0c DELAY\n",
    "PROBE": f"{IP} dev br-lab lladdr 52:54:00:0a:0b:0c PROBE\n",
    "PERMANENT": f"{IP} dev br-lab lladdr 52:54:00:0a:0b:0c PERMANENT\n",
}
# ... and for one that did not: still asking, given up, or no entry at all.
SILENT_HOST = {
    "INCOMPLETE": f"{IP} dev br-lab INCOMPLETE\n",
    "FAILED": f"{IP} dev br-lab FAILED\n",
    "no entry": "",
}

# What connect() raises (None: it connected), as the probe sees it on Linux.
CONNECTED = None
REFUSED = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")  # a reset: nothing listens
TIMED_OUT = socket.timeout("timed out")  # no answer within the probe's timeout: a DROP rule, or ARP never answered
HOST_UNREACHABLE = OSError(errno.EHOSTUNREACH, "No route to host")  # an ICMP error, or ARP given up on
NET_UNREACHABLE = OSError(errno.ENETUNREACH, "Network is unreachable")  # no route at all
ERRORS = {"connected": CONNECTED, "refused": REFUSED, "timed out": TIMED_OUT, "EHOSTUNREACH": HOST_UNREACHABLE,
          "ENETUNREACH": NET_UNREACHABLE}


# -- the pure functions ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("error", "outcome"), [
    (CONNECTED, "open"),
    (REFUSED, "closed"),
    (TIMED_OUT, "silent"),
    (HOST_UNREACHABLE, "icmp"),
    (NET_UNREACHABLE, "unreachable"),
    (OSError(errno.EHOSTDOWN, "Host is down"), "unreachable"),
], ids=["connected", "refused", "timed-out", "EHOSTUNREACH", "ENETUNREACH", "EHOSTDOWN"])
def test_each_connect_error_has_its_raw_outcome(error, outcome):
    assert connect_outcome(error) == outcome


@pytest.mark.parametrize("state", sorted(ANSWERED))
def test_a_neighbour_with_a_link_layer_address_answered_arp(state):
    assert answered_arp(ANSWERED[state]) is True


@pytest.mark.parametrize("state", sorted(SILENT_HOST))
def test_a_neighbour_still_asked_or_given_up_on_did_not_answer_arp(state):
    assert answered_arp(SILENT_HOST[state]) is False


@pytest.mark.parametrize(("error", "neigh", "reported"), [
    (CONNECTED, ANSWERED["REACHABLE"], "open"),
    (REFUSED, ANSWERED["REACHABLE"], "closed"),
    (TIMED_OUT, ANSWERED["REACHABLE"], "filtered"),
    (TIMED_OUT, ANSWERED["STALE"], "filtered"),
    (HOST_UNREACHABLE, ANSWERED["REACHABLE"], "rejected"),
    (HOST_UNREACHABLE, ANSWERED["DELAY"], "rejected"),
    (TIMED_OUT, SILENT_HOST["INCOMPLETE"], "unreachable"),
    (TIMED_OUT, SILENT_HOST["no entry"], "unreachable"),
    (HOST_UNREACHABLE, SILENT_HOST["FAILED"], "unreachable"),  # the kernel gave up on ARP: not an ICMP reject
    (NET_UNREACHABLE, ANSWERED["REACHABLE"], "unreachable"),  # no route, whatever the neighbour table says
], ids=["open", "closed", "filtered", "filtered-stale", "rejected", "rejected-delay", "unreachable-incomplete",
        "unreachable-no-entry", "unreachable-arp-failed", "unreachable-no-route"])
def test_each_class_comes_from_its_connect_and_neighbour(error, neigh, reported):
    assert classify(error, neigh) == reported


def test_open_and_closed_need_no_arp_answer():
    # The host answered the connect itself: the neighbour table, read later, cannot take that back.
    for neigh in SILENT_HOST.values():
        assert classify(CONNECTED, neigh) == "open"
        assert classify(REFUSED, neigh) == "closed"


@pytest.mark.parametrize(("error_name", "state"), list(itertools.product(sorted(ERRORS), sorted(SILENT_HOST))))
def test_a_host_that_never_answered_arp_is_never_reported_as_refused_by_the_firewall(error_name, state):
    reported = classify(ERRORS[error_name], SILENT_HOST[state])
    assert reported not in REFUSED_BY_FIREWALL
    if error_name not in ("connected", "refused"):
        assert reported == "unreachable"


def test_silence_and_icmp_errors_are_the_firewall_only_from_a_host_that_answered_arp():
    for neigh in ANSWERED.values():
        assert (classify(TIMED_OUT, neigh), classify(HOST_UNREACHABLE, neigh)) == ("filtered", "rejected")


# -- the script PROBE sends to the host ------------------------------------------------------------------------


def test_the_probe_travels_in_single_quotes_and_compiles():
    assert not set("'`$\\") & set(check.PROBE)  # nothing the host's shell would read inside '...'
    compile(check.PROBE, "PROBE", "exec")
    for function in (connect_outcome, answered_arp, classify):  # the host runs the very functions tested above
        assert f"def {function.__name__}(" in check.PROBE


class FakeSocket:
    """socket.socket as the probe uses it; connect() does what CONNECTS says for the address."""

    CONNECTS: dict[tuple[str, int], BaseException | None] = {}
    log: list[str] = []

    def settimeout(self, seconds: float) -> None:
        assert seconds == 0.3

    def connect(self, address: tuple[str, int]) -> None:
        FakeSocket.log.append(f"connect {address[0]}:{address[1]}")
        error = FakeSocket.CONNECTS[address]
        if error is not None:
            raise error

    def close(self) -> None:
        pass


def run_probe(monkeypatch, capsys, connects: dict[tuple[str, int], BaseException | None],
              neighbours: dict[str, str]) -> tuple[list[str], list[str]]:
    """PROBE run in this process for the given targets, with fake connects and fake `ip neigh` output: what it
    prints, and the order of connects and neighbour look-ups."""
    FakeSocket.CONNECTS, FakeSocket.log = connects, []

    def ip(argv, capture_output, text):
        assert argv[:4] == ["ip", "neigh", "show", "to"] and capture_output and text
        FakeSocket.log.append(f"ip neigh {argv[4]}")
        return subprocess.CompletedProcess(argv, 0, neighbours[argv[4]], "")

    monkeypatch.setattr(socket, "socket", FakeSocket)
    monkeypatch.setattr(subprocess, "run", ip)
    monkeypatch.setattr(sys, "argv", ["-c", json.dumps([list(target) for target in connects])])
    exec(compile(check.PROBE, "PROBE", "exec"), {"__name__": "__main__"})
    return json.loads(capsys.readouterr().out), FakeSocket.log


def test_the_probe_script_classifies_each_target_from_its_connect_and_its_hosts_neighbour_entry(monkeypatch, capsys):
    up, gone, routeless = "192.168.56.21", "192.168.56.31", "10.99.0.1"
    connects = {
        (up, 8000): CONNECTED,
        (up, 5432): REFUSED,
        (up, 11211): TIMED_OUT,
        (up, 9100): HOST_UNREACHABLE,
        (gone, 5432): TIMED_OUT,
        (gone, 22): HOST_UNREACHABLE,
        (routeless, 80): NET_UNREACHABLE,
    }
    neighbours = {up: f"{up} dev br-lab lladdr 52:54:00:0a:0b:0c REACHABLE\n", gone: f"{gone} dev br-lab FAILED\n",
                  routeless: ""}
    printed, log = run_probe(monkeypatch, capsys, connects, neighbours)
    assert printed == ["open", "closed", "filtered", "rejected", "unreachable", "unreachable", "unreachable"]
    # The neighbour table is read once per host, after every connect (the connects are what make the ARP requests).
    assert [entry.split()[0] for entry in log] == ["connect"] * len(connects) + ["ip"] * len(neighbours)
    assert sorted(log[len(connects):]) == sorted(f"ip neigh {ip}" for ip in neighbours)


def test_the_probe_script_runs_as_the_host_runs_it(tmp_path):
    """The assembled script in a fresh interpreter (python3 -c PROBE TARGETS), against this machine's loopback: a
    port something listens on is open, one nothing listens on is closed; ip is a stand-in that prints no entry."""
    fake_ip = tmp_path / "ip"
    fake_ip.write_text("#!/bin/sh\necho \"$*\" >> \"$(dirname \"$0\")/asked\"\n")
    fake_ip.chmod(fake_ip.stat().st_mode | stat.S_IXUSR)
    with socket.socket() as listening, socket.socket() as spare:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        spare.bind(("127.0.0.1", 0))  # bound, not listening: connects to it are refused
        targets = [["127.0.0.1", listening.getsockname()[1]], ["127.0.0.1", spare.getsockname()[1]]]
        done = subprocess.run([sys.executable, "-c", check.PROBE, json.dumps(targets)], capture_output=True, text=True,
                              timeout=30, env={**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["open", "closed"]
    assert (tmp_path / "asked").read_text() == "neigh show to 127.0.0.1\n"
