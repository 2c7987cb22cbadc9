"""Unit tests for keeping secrets off command lines and out of output: every recipe of a full converge runs against
a recording fake host and no command (nor any world-readable upload) holds a secret; SCRAM verifiers made on the
machine; failed commands and failed checks redact the lab's secrets."""
from __future__ import annotations

import re
import shlex
import threading

import pytest

from lab import stack as stacks
from lab import tls
from lab.hosts import HostFacts
from lab.machine import wheels
from lab.recipes import RecipeError, Target, converge, load_recipes
from lab.remote import CommandResult, RemoteHost
from lab.secrets import REDACTED, redact, scram_matches, scram_verifier, sql_literal

from lab.topology import Overrides, resolve
from provision.step1_bootstrap.recipes import DATABASE_OVERLAY, OVERLAY_DIR, SETTINGS
from tests.test_unit_scram import scram_verifier as rfc_verifier

DATABASE_SETTINGS = f"{OVERLAY_DIR}/{DATABASE_OVERLAY}.toml"

SECRETS = {
    "django_secret_key": "dj4ngo-s3cret-KEY-value-0123456789abcdefghijklmnopqrstuvwxyz",
    "db_password": "db-pw-Zq9Xw2Lk7",
    "demo_password": "demo-pw-Hy6Tr3Nb",
    "replication_password": "repl-pw-Kd8Vc1Qm4",
    "queue_password": "queue-pw-Rt5Gh8Wd2",
}
FACTS = HostFacts(proxy_url="http://192.168.56.1:3128", wheelhouse="/var/cache/lab/wheels", control_address="192.168.56.1")
SECRET_FILE_WRITE = re.compile(r'cat > "\$tmp"')


class RecordingHost:
    """A host where every command succeeds and nothing exists yet; it records every command, its user, its stdin and
    every upload. It answers the few questions whose answer decides whether a secret-bearing command runs at all."""

    def __init__(self, name: str, log: list[tuple[str, str, str | None, str | None]], verifier: str,
                 files: dict[str, str]) -> None:
        self.name, self.log, self.verifier, self.files = name, log, verifier, files

    def run(self, command: str, user: str | None = None, stdin: str | None = None) -> CommandResult:
        self.log.append((self.name, command, user, stdin))
        words = shlex.split(command)
        if "rolpassword" in command:  # the role exists with another password: the recipe resets it
            return CommandResult(command, 0, self.verifier + "\n", "")
        if "importlib.metadata" in command:  # the venv lacks Django: the recipe installs the requirements
            return CommandResult(command, 0, "django==5.2.19\n", "")
        if words[0] == "readlink":
            return CommandResult(command, 0, "/srv/bank/releases/0123456789ab\n", "")
        if words[0] in ("stat", "test") and ";" not in command:
            return CommandResult(command, 1, "", "")
        if words[0].startswith("HEALTH="):
            ips = words[words.index("probe") + 2:]
            return CommandResult(command, 0, "".join(f"{ip} HTTP/1.1 200 OK\n" for ip in ips), "")
        if words[0] == "dpkg-query":
            return CommandResult(command, 0, "".join(f"{w} ii\n" for w in words[3:-1]), "")
        if stdin is not None and SECRET_FILE_WRITE.search(command):
            self.files[words[-1]] = stdin
        return CommandResult(command, 0, "", "")

    def put(self, data: bytes, remote_path: str) -> None:
        self.log.append((self.name, f"<upload {remote_path}>", None, None))
        self.files[remote_path] = data.decode(errors="replace")

    def get(self, remote_path: str) -> bytes:
        return b""

    def close(self) -> None:
        pass


def full_converge(monkeypatch, app_server: str):
    """Every recipe of every step over a lab with every tier, on recording hosts; (log, files by host, report)."""
    monkeypatch.setattr(wheels, "ensure_wheels", lambda pinned: None)  # no machine download in a unit test
    monkeypatch.setattr(wheels, "hashed_requirements", lambda pinned, folder: pinned)
    # Every tier the stack knows, at least one host each (two web hosts: a peer's recipes run too), so a tier added
    # later is covered without touching this test.
    counts = {name: min(spec.max_count, max(1, spec.min_count)) for name, spec in stacks.current().tiers.items()}
    topology = resolve({}, {}, Overrides(web=2, counts=counts, app_server=app_server), platform="linux")
    log: list[tuple[str, str, str | None, str | None]] = []
    hosts: dict[str, RecordingHost] = {}
    lock = threading.Lock()
    other_verifier = scram_verifier("an old password")

    def connect(name: str) -> RecordingHost:
        with lock:
            host = RecordingHost(name, log, other_verifier, hosts[name].files if name in hosts else {})
            hosts.setdefault(name, host)
            return host

    # The lab's CA (made by `lab up` on the machine): the balancer's recipe signs its certificate with it.
    authority = tls.new_authority(topology.name, topology.subnet, [h.name for h in topology.tier("lb")])
    report = converge(topology, load_recipes(), connect, FACTS, {**SECRETS, **authority.as_secrets()})
    return log, hosts, report


@pytest.fixture(scope="module", params=["gunicorn", "mod_wsgi"])
def converged(request):
    monkeypatch = pytest.MonkeyPatch()
    try:
        yield full_converge(monkeypatch, request.param)
    finally:
        monkeypatch.undo()


def test_every_recipe_of_a_full_converge_ran(converged):
    log, hosts, report = converged
    failed = [r for r in report.results if r.status not in ("changed", "ok")]
    assert not failed, failed
    names = {r.recipe for r in report.results}
    assert {r.name for r in load_recipes()} <= names
    assert {"db1", "web1", "web2", "lb1"} <= set(hosts)


def test_no_command_of_a_full_converge_holds_a_secret(converged):
    log, _, _ = converged
    assert len(log) > 100
    for host, command, user, _ in log:
        # the shell string, each word of it as the host's shell would split it, and the user it runs as
        for secret_name, value in SECRETS.items():
            assert value not in command, f"{secret_name} on a command line on {host}: {command[:80]}"
            assert value not in (user or "")
        assert "SCRAM-SHA-256$" not in command, f"a role's verifier on a command line on {host}"
        # the lab CA's key and lb1's TLS key (made during the converge, so not in SECRETS): no PEM key at all
        assert "PRIVATE KEY-----" not in command, f"a private key on a command line on {host}: {command[:80]}"


def test_no_world_readable_upload_holds_a_secret(converged):
    _, hosts, _ = converged
    for host in hosts.values():
        for path, content in host.files.items():
            if path.startswith("/tmp/"):
                assert not any(value in content for value in SECRETS.values()), f"{path} on {host.name}"
                assert "PRIVATE KEY-----" not in content, f"a private key in {path} on {host.name}"


def test_secrets_reach_the_hosts_only_on_stdin_or_in_private_files(converged):
    log, hosts, _ = converged
    by_stdin = [(host, command, stdin) for host, command, _, stdin in log if stdin]
    settings = [hosts[h].files[SETTINGS] for h in ("web1", "web2")]
    assert all(SECRETS["django_secret_key"] in text for text in settings)
    database = [hosts[h].files[DATABASE_SETTINGS] for h in ("web1", "web2")]  # step 2's: the site on PostgreSQL
    assert all(SECRETS["db_password"] in text for text in database)
    roles = [stdin for host, command, stdin in by_stdin if command.startswith("psql")]
    site_role = [sql for sql in roles if "ROLE bank " in sql]
    replication_role = [sql for sql in roles if "ROLE replicator " in sql]
    assert site_role and all("ALTER ROLE bank PASSWORD 'SCRAM-SHA-256$4096:" in sql for sql in site_role)
    assert replication_role and all("ALTER ROLE replicator PASSWORD 'SCRAM-SHA-256$4096:" in sql for sql in replication_role)
    # only the verifiers reach the host
    assert not any(SECRETS["db_password"] in sql or SECRETS["replication_password"] in sql for sql in roles)
    assert scram_matches(re.search(r"'(SCRAM[^']+)'", site_role[0]).group(1), SECRETS["db_password"])
    assert scram_matches(re.search(r"'(SCRAM[^']+)'", replication_role[0]).group(1), SECRETS["replication_password"])
    demo = [stdin for _, command, stdin in by_stdin if "load_sample_data" in command]
    assert demo == [SECRETS["demo_password"] + "\n"]
    # step 6's queue: Redis's password file on q1, and the site's queue settings wherever its code runs
    assert hosts["q1"].files["/etc/redis/lab-auth.conf"] == f"requirepass {SECRETS['queue_password']}\n"
    assert all(SECRETS["queue_password"] in hosts[h].files["/etc/bank/bank.d/queue.toml"] for h in ("web1", "q1"))


@pytest.mark.parametrize("path", [SETTINGS, DATABASE_SETTINGS])
def test_the_settings_files_are_written_root_bank_0640_through_stdin(converged, path):
    log, _, _ = converged
    writes = [command for host, command, _, stdin in log if host == "web1" and stdin and command.endswith(path)]
    assert len(writes) == 1
    folder = path.rsplit("/", 1)[0]
    assert "umask 077" in writes[0] and f"mktemp {folder}/.lab-write-" in writes[0]
    assert "chown root:bank" in writes[0] and "chmod 640" in writes[0]


# -- SCRAM -------------------------------------------------------------------------------------------------------


def test_scram_verifier_is_the_rfc_construction_and_a_fresh_salt_each_time():
    salt = b"0123456789abcdef"
    assert scram_verifier("pw", salt) == rfc_verifier("pw", salt)
    assert scram_verifier("pw", salt, 10000) == rfc_verifier("pw", salt, 10000)
    first, second = scram_verifier("pw"), scram_verifier("pw")
    assert first != second and scram_matches(first, "pw") and scram_matches(second, "pw")
    assert not scram_matches(first, "pW")


def test_sql_literal_doubles_quotes():
    assert sql_literal("it's") == "'it''s'"


# -- redaction ------------------------------------------------------------------------------------------------------


def test_redact_hides_every_value_longest_first():
    assert redact("a abc b", ["abc", "ab"]) == f"a {REDACTED} b"
    assert redact("nothing here", ["", "zzz"]) == "nothing here"
    verifier = scram_verifier("pw")
    assert redact(f"LINE 1: ALTER ROLE bank PASSWORD '{verifier}';", []) == f"LINE 1: ALTER ROLE bank PASSWORD '{REDACTED}';"


class FailingHost:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []

    def run(self, command: str, user: str | None = None, stdin: str | None = None) -> CommandResult:
        self.seen.append((command, stdin))
        echoed = f" in {stdin}" if stdin else ""  # as psql quotes the failing statement
        return CommandResult(command, 1, "", f"psql: error: {SECRETS['db_password']} rejected near {SECRETS['demo_password']}{echoed}\n")

    def close(self) -> None:
        pass


def target(remote) -> Target:
    topology = resolve({}, {}, Overrides(), platform="linux")
    return Target(remote, topology.host("db1"), topology, FACTS, dict(SECRETS), None, lambda name: remote)


def test_a_failed_command_names_no_secret_even_if_the_command_or_its_output_held_one():
    remote = FailingHost()
    with pytest.raises(RecipeError) as failure:
        target(remote).run("echo %s", SECRETS["db_password"])  # a recipe bug: still not shown
    message = str(failure.value)
    assert REDACTED in message
    assert not any(value in message for value in SECRETS.values())


def test_stdin_reaches_the_host_and_is_not_in_the_error():
    remote = FailingHost()
    with pytest.raises(RecipeError) as failure:
        target(remote).run("psql -q", stdin="ALTER ROLE x PASSWORD 'SCRAM-SHA-256$stuff';")
    assert remote.seen == [("psql -q", "ALTER ROLE x PASSWORD 'SCRAM-SHA-256$stuff';")]
    assert "SCRAM" not in str(failure.value)


def test_secret_file_refuses_a_mode_others_could_read():
    with pytest.raises(ValueError):
        target(FailingHost()).secret_file("/etc/x", "s", mode=0o644)


class FakeChannel:
    """The SSH channel a command with stdin runs on: what was executed, and the bytes sent to its stdin."""

    def __init__(self, calls: list) -> None:
        self.calls, self.sent, self.command = calls, b"", ""

    def exec_command(self, command: str) -> None:
        self.command = command

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def shutdown_write(self) -> None:
        self.calls.append((self.command, self.sent.decode()))

    def recv_ready(self) -> bool:
        return False

    recv_stderr_ready = recv_ready

    def exit_status_ready(self) -> bool:
        return bool(self.calls)  # once its stdin has ended, the fake command ends

    def recv_exit_status(self) -> int:
        return 0

    def close(self) -> None:
        pass


class FabricConnection:
    """What RemoteHost hands to Fabric (a command without stdin) or to the SSH channel (one with): the wrapped
    command and what its stdin got."""

    user = "vagrant"

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        channel = FakeChannel(self.calls)
        transport = type("Transport", (), {"open_session": lambda _self: channel})()
        self.client = type("Client", (), {"get_transport": lambda _self: transport})()

    def open(self) -> None:
        pass

    def run(self, command, **options):
        stream = options["in_stream"]
        self.calls.append((command, stream.read() if stream else stream))

        class Result:
            exited, stdout, stderr = 0, "", ""
        return Result()


def test_remote_host_sends_stdin_as_a_stream_never_in_the_argv():
    remote = RemoteHost.__new__(RemoteHost)
    remote.name = "db1"
    remote.connection = FabricConnection()
    remote.run("psql -q", user="postgres", stdin="secret sql")
    remote.run("true")
    (argv, sent), (_, none) = remote.connection.calls
    assert sent == "secret sql" and "secret sql" not in argv
    assert argv.startswith("sudo -n -H -u postgres ")
    assert none is False  # no stdin: the command reads none (Fabric would otherwise forward ours)


# -- check failures ---------------------------------------------------------------------------------------------


def test_a_failing_checks_report_is_redacted(tmp_path):
    from types import SimpleNamespace

    from lab import checkplugin
    from lab.state import LabDir

    labdir = LabDir(tmp_path / ".lab")
    values = labdir.secrets()
    config = SimpleNamespace(stash={checkplugin.CONTEXT: SimpleNamespace(labdir=labdir)})
    report = SimpleNamespace(longrepr=f"assert 'db_password = \"{values['db_password']}\"' == ''",
                             sections=[("Captured stdout call", f"secret_key = {values['django_secret_key']}")])
    hook = checkplugin.pytest_runtest_makereport(SimpleNamespace(config=config), None)
    next(hook)
    with pytest.raises(StopIteration):
        hook.send(SimpleNamespace(get_result=lambda: report))
    shown = report.longrepr + report.sections[0][1]
    assert REDACTED in report.longrepr and REDACTED in report.sections[0][1]
    assert not any(value in shown for value in values.values())
