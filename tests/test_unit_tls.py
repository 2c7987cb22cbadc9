"""Unit tests for lab.tls (the lab's CA and the balancer's certificates), `lab ca`, site_url and the TLS recipe."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import re
import shlex
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509

from lab import cli as cli_module
from lab import lifecycle, tls
from lab.lifecycle import Project
from lab.state import LabDir
from lab.testing import one_error_line, run_main
from lab.topology import Overrides, resolve

SUBNET = "192.168.56.0/24"
NAMES = ["lb1", "lb2"]


@pytest.fixture
def authority(tmp_path: Path) -> tls.Authority:
    return tls.ensure_authority(tmp_path, "t", SUBNET, NAMES)


def test_the_ca_is_made_once_its_key_0600(tmp_path: Path, authority: tls.Authority) -> None:
    cert, key = tls.ca_paths(tmp_path)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert.stat().st_mode) == 0o644
    assert stat.S_IMODE(cert.parent.stat().st_mode) == 0o700
    assert tls.ensure_authority(tmp_path, "t", SUBNET, NAMES) == authority  # read back, not made again
    assert "PRIVATE KEY" not in cert.read_text()


def test_a_ca_that_cannot_cover_the_lab_is_made_anew(tmp_path: Path, authority: tls.Authority) -> None:
    assert tls.ensure_authority(tmp_path, "t", "192.168.57.0/24", NAMES) != authority
    broken = tmp_path / "ca" / "ca.crt"
    broken.write_text("not a certificate")
    assert tls.ensure_authority(tmp_path, "t", "192.168.57.0/24", NAMES).cert_pem != "not a certificate"


def test_the_ca_signs_for_the_lab_only(authority: tls.Authority) -> None:
    ca = authority.certificate
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    constraints = ca.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    assert {str(n.value) for n in constraints.value.permitted_subtrees} == {SUBNET, *NAMES}


def test_a_certificate_for_the_balancer_verifies_against_the_ca(tmp_path: Path, authority: tls.Authority) -> None:
    pem = tls.issue(authority, ["lb1"], ["192.168.56.11"])
    cert_pem, key_pem = pem.split("-----END CERTIFICATE-----\n")
    cert = x509.load_pem_x509_certificate(cert_pem.encode() + b"-----END CERTIFICATE-----\n")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["lb1"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.168.56.11")]
    assert "PRIVATE KEY" in key_pem
    # A real TLS handshake on loopback: OpenSSL checks the chain, the name constraints and the address.
    (tmp_path / "server.pem").write_text(pem)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "server.pem")
    client = ssl.create_default_context(cafile=str(tls.ca_paths(tmp_path)[0]))
    assert handshake(server, client, "lb1") == "ok"
    assert "doesn't match" in handshake(server, client, "lb2") or "mismatch" in handshake(server, client, "lb2")


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, name: str) -> str:
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        connection, _ = listener.accept()
        try:
            with server.wrap_socket(connection, server_side=True):
                pass
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with client.wrap_socket(raw, server_hostname=name):
                return "ok"
    except ssl.SSLCertVerificationError as error:
        return error.verify_message
    finally:
        thread.join(5)
        listener.close()


def test_reasons_to_reissue(authority: tls.Authority, tmp_path: Path) -> None:
    pem = tls.issue(authority, ["lb1"], ["192.168.56.11"])
    assert tls.reason_to_reissue(pem, authority, ["lb1"], ["192.168.56.11"]) is None
    assert tls.reason_to_reissue("", authority, ["lb1"], ["192.168.56.11"]) == "no certificate yet"
    assert tls.reason_to_reissue(pem, authority, ["lb1"], ["192.168.56.12"]) == "its certificate names other hosts"
    other = tls.new_authority("other", SUBNET, NAMES)
    assert tls.reason_to_reissue(pem, other, ["lb1"], ["192.168.56.11"]) == "its certificate is not signed by this lab's CA"


def test_a_certificate_near_its_end_is_reissued(authority: tls.Authority, monkeypatch: pytest.MonkeyPatch) -> None:
    pem = tls.issue(authority, ["lb1"], ["192.168.56.11"])
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=tls.LEAF_DAYS - 10)
    monkeypatch.setattr(tls, "_now", lambda: later)
    assert tls.reason_to_reissue(pem, authority, ["lb1"], ["192.168.56.11"]) == "its certificate ends within 30 days"


def test_secrets_round_trip(authority: tls.Authority) -> None:
    assert tls.Authority.from_secrets({"db_password": "x", **authority.as_secrets()}) == authority
    assert tls.Authority.from_secrets({"db_password": "x"}) is None


# -- site_url, ca_file, `lab ca`, `lab status` -------------------------------------------------------------


def test_site_url_is_https_by_default() -> None:
    topology = resolve({}, {}, Overrides(), platform="linux")
    assert lifecycle.site_url(topology) == "https://192.168.56.11"
    assert lifecycle.site_url(topology, scheme="http") == "http://192.168.56.11"
    with pytest.raises(lifecycle.UsageError):
        lifecycle.site_url(topology, scheme="ftp")


def test_the_ca_signs_for_every_balancer_the_stack_allows() -> None:
    topology = resolve({}, {}, Overrides(), platform="linux")
    assert lifecycle.balancer_names(topology) == ["lb1", "lb2"]


def write_lab(folder: Path) -> LabDir:
    labdir = LabDir(folder / ".lab")
    labdir.ensure()
    labdir.write(dict(labdir.new_state(resolve({}, {}, Overrides(), platform="linux")), status="up"))
    return labdir


class StoppedHosts:
    def status(self, labdir, state):
        return {}


def test_lab_ca_before_and_after_the_ca_exists(no_lab: Path, capfd: pytest.CaptureFixture[str]) -> None:
    labdir = write_lab(no_lab)
    code, out, err = run_main(["ca"], capfd)
    assert code == 7 and out == "" and "run `lab up`" in one_error_line(err)
    project = Project.here()
    lifecycle.lab_authority(project, labdir.topology())
    code, out, err = run_main(["ca"], capfd)
    assert (code, out, err) == (0, f"{labdir.path / 'ca' / 'ca.crt'}\n", "")
    assert lifecycle.ca_file(project) == labdir.path / "ca" / "ca.crt"


def test_status_shows_the_ca(no_lab: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    write_lab(no_lab)
    monkeypatch.setattr(cli_module.lifecycle, "get_provider", lambda name: StoppedHosts())
    code, out, _ = run_main(["status"], capfd)
    assert code == 0 and "CA:" not in out
    project = Project.here()
    lifecycle.lab_authority(project, project.labdir.topology())
    code, out, _ = run_main(["status"], capfd)
    assert f"CA: {no_lab / '.lab' / 'ca' / 'ca.crt'}" in " ".join(out.split())


# -- the balancer's certificate recipe, on a fake balancer ---------------------------------------------------


class FakeBalancer:
    """Answers the few commands the certificate recipe runs; keeps files (content, mode) and what it was asked."""

    def __init__(self, nginx_running: bool = False) -> None:
        self.files: dict[str, tuple[str, str]] = {}  # path -> (content, "mode owner group")
        self.uploads: dict[str, str] = {}
        self.markers: set[str] = set()
        self.commands: list[str] = []
        self.nginx_running = nginx_running

    def run(self, command: str, user: str | None = None, stdin: str | None = None):
        from lab.remote import CommandResult

        self.commands.append(command)
        if 'cat > "$tmp"' in command:  # t.file of a private file: its content on stdin, into a mktemp name, renamed
            target = shlex.split(command)[-1]
            mode = re.search(r"chmod (\d+)", command).group(1)
            owners = re.search(r"chown (\S+) ", command).group(1)
            self.files[target] = (stdin or "", f"{mode} {owners.replace(':', ' ')}")
            return CommandResult(command, 0, "", "")
        words = shlex.split(command.split(" 2>/dev/null")[0].split(" && ")[0].split(";")[0])

        def answer(code: int, out: str = "") -> CommandResult:
            return CommandResult(command, code, out, "")

        if words[:2] == ["stat", "-c"] and words[2] == "%F %a %U %G":  # t.directory
            return answer(0, "directory 700 root root\n") if words[3] in self.markers else answer(1)
        if words[0] == "mkdir" and "chown" in command:
            self.markers.add(words[2])
            return answer(0)
        if words[:2] == ["test", "-e"] and "owed" in command:  # t.owed
            found = "owed" if words[2] in self.markers else ""
            self.markers.add(words[2])
            return answer(0, found)
        if words[:2] == ["rm", "-f"]:
            self.markers.discard(words[2])
            return answer(0)
        if words[0] == "sed":  # only the certificate comes back
            content = self.files.get(words[3], ("", ""))[0]
            return answer(0, content.split("-----END CERTIFICATE-----\n")[0] + "-----END CERTIFICATE-----\n"
                          if content else "")
        if words[:2] == ["stat", "-c"]:  # t.file's check, and the recipe's mode check
            if words[3] not in self.files:
                return answer(1)
            content, mode = self.files[words[3]]
            digest = f"{hashlib.sha256(content.encode()).hexdigest()}\n" if "sha256sum" in command else ""
            return answer(0, f"{mode}\n{digest}")
        if words[0] == "chown" and "mv -f" in command:  # t.file moves its upload into place
            source, target = command.rsplit("mv -f ", 1)[1].split()
            mode = re.search(r"chmod (\d+)", command).group(1)
            self.files[target] = (self.uploads.pop(source), f"{mode} {words[1].replace(':', ' ')}")
            return answer(0)
        if words[:3] == ["systemctl", "is-active", "--quiet"]:
            return answer(0 if self.nginx_running else 3)
        if words in (["nginx", "-t"], ["systemctl", "reload", "nginx"]):
            return answer(0)
        raise AssertionError(f"unexpected command: {command}")

    def put(self, data: bytes, remote_path: str) -> None:
        self.uploads[remote_path] = data.decode()


def converge_certificate(balancer: FakeBalancer, secrets: dict[str, str]) -> list[str]:
    from lab.hosts import HostFacts
    from lab.recipes import Target
    from provision.step5_balancer import recipes as step5

    topology = resolve({}, {}, Overrides(), platform="linux")
    target = Target(balancer, topology.host("lb1"), topology, HostFacts(proxy_url=None), secrets, None,
                    lambda name: balancer)
    step5.certificate(target)
    return target.changes


def pem_on(balancer: FakeBalancer) -> tuple[str, str]:
    from provision.step5_balancer.recipes import TLS_PEM

    return balancer.files[TLS_PEM]


def test_the_recipe_installs_a_certificate_and_key_root_only(authority: tls.Authority) -> None:
    balancer = FakeBalancer()
    changes = converge_certificate(balancer, authority.as_secrets())
    assert "new certificate from the lab CA (no certificate yet)" in changes
    content, mode = pem_on(balancer)
    assert mode == "600 root root"
    assert content.index("BEGIN CERTIFICATE") < content.index("BEGIN PRIVATE KEY")
    assert tls.reason_to_reissue(content, authority, ["lb1"], ["192.168.56.11"]) is None
    # Keys travel as uploads, never in a command; the CA's key never leaves this machine.
    assert not any("PRIVATE KEY" in command or authority.key_pem in command for command in balancer.commands)
    assert authority.key_pem not in content
    assert converge_certificate(balancer, authority.as_secrets()) == []  # converged: the same certificate kept
    assert pem_on(balancer)[0] == content


def test_a_new_ca_means_a_new_certificate_and_nginx_reloads(authority: tls.Authority) -> None:
    balancer = FakeBalancer()
    converge_certificate(balancer, authority.as_secrets())
    balancer.nginx_running = True
    other = tls.new_authority("t", SUBNET, NAMES)
    changes = converge_certificate(balancer, other.as_secrets())
    assert "new certificate from the lab CA (its certificate is not signed by this lab's CA)" in changes
    assert "reloaded nginx for its new certificate" in changes and "systemctl reload nginx" in balancer.commands
    assert tls.reason_to_reissue(pem_on(balancer)[0], other, ["lb1"], ["192.168.56.11"]) is None


def test_the_recipe_needs_the_lab_ca(authority: tls.Authority) -> None:
    from lab.recipes import RecipeError

    with pytest.raises(RecipeError, match="no lab CA"):
        converge_certificate(FakeBalancer(), {"db_password": "pw"})
