"""The lab's own certificate authority (.lab/ca/, its key 0600) and the certificates it signs for the balancers."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lab.files import write_atomically

CA_FOLDER = "ca"
CA_CERT = "ca.crt"
CA_KEY = "ca.key"
# The recipes get the CA through their secrets (lab.recipes' Target.secrets), under these names.
SECRET_CERT = "tls_ca_cert"
SECRET_KEY = "tls_ca_key"
CA_DAYS = 10 * 365
LEAF_DAYS = 397  # what browsers accept for a server certificate
RENEW_DAYS = 30  # a certificate closer than this to its end is made anew


class TlsError(Exception):
    """A certificate or key lab cannot use (unreadable, not PEM)."""


def ca_paths(labdir_path: Path) -> tuple[Path, Path]:
    """Where a lab keeps its CA: (certificate, key)."""
    folder = labdir_path / CA_FOLDER
    return folder / CA_CERT, folder / CA_KEY


@dataclass(frozen=True)
class Authority:
    """A CA as PEM text: its certificate (public) and its private key."""

    cert_pem: str
    key_pem: str

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem.encode())

    @property
    def key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.key_pem.encode(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TlsError("the lab CA's key is not an EC key")
        return key

    def as_secrets(self) -> dict[str, str]:
        return {SECRET_CERT: self.cert_pem, SECRET_KEY: self.key_pem}

    @classmethod
    def from_secrets(cls, secrets: dict[str, str]) -> "Authority | None":
        if SECRET_CERT in secrets and SECRET_KEY in secrets:
            return cls(secrets[SECRET_CERT], secrets[SECRET_KEY])
        return None


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def new_authority(lab_name: str, subnet: str, names: Iterable[str]) -> Authority:
    """A CA for one lab: it may sign only for the lab's subnet and the given host names (name constraints), so a
    browser that trusts it trusts nothing beyond this lab, even if its key leaked."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "lab"),
                         x509.NameAttribute(NameOID.COMMON_NAME, f"lab {lab_name} CA")])
    now = _now()
    permitted: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_network(subnet))]
    permitted += [x509.DNSName(name) for name in sorted(set(names))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return Authority(cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode())


def ensure_authority(labdir_path: Path, lab_name: str, subnet: str, names: Iterable[str]) -> Authority:
    """The lab's CA, made the first time (certificate 0644, key 0600, each written whole) and read after that.

    Made anew only when it cannot cover this lab any more (another subnet or balancer name): a browser that trusted
    the old one must then trust the new one.
    """
    cert_path, key_path = ca_paths(labdir_path)
    names = sorted(set(names))
    if cert_path.exists() and key_path.exists():
        try:
            found = Authority(cert_path.read_text(), key_path.read_text())
            if covers(found.certificate, subnet, names) and found.key.public_key() == found.certificate.public_key():
                return found
        except (ValueError, TlsError):
            pass  # unreadable: made anew below
    authority = new_authority(lab_name, subnet, names)
    cert_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # The key first: a certificate on disk always has its key beside it.
    write_atomically(key_path, authority.key_pem, mode=0o600, fsync=True)
    write_atomically(cert_path, authority.cert_pem, mode=0o644, fsync=True)
    return authority


def covers(ca: x509.Certificate, subnet: str, names: Iterable[str]) -> bool:
    """Whether a CA may sign for this subnet and these names, and has a year left."""
    try:
        constraints = ca.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return False
    permitted = constraints.permitted_subtrees or []
    networks = {str(n.value) for n in permitted if isinstance(n, x509.IPAddress)}
    dns = {n.value for n in permitted if isinstance(n, x509.DNSName)}
    left = ca.not_valid_after_utc - _now()
    return str(ipaddress.ip_network(subnet)) in networks and set(names) <= dns and left > datetime.timedelta(days=365)


def issue(authority: Authority, names: Iterable[str], addresses: Iterable[str]) -> str:
    """A new key and a server certificate for these names and addresses, signed by the CA: one PEM text, the
    certificate first (nginx reads both from one file, so they are always replaced together)."""
    names, addresses = sorted(set(names)), sorted(set(addresses))
    key = ec.generate_private_key(ec.SECP256R1())
    ca = authority.certificate
    now = _now()
    alternative: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alternative += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (names or addresses)[0])]))
        .issuer_name(ca.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alternative), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()), critical=False)
        .sign(authority.key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM).decode() + key_pem.decode()


def reason_to_reissue(cert_pem: str, authority: Authority, names: Iterable[str], addresses: Iterable[str]) -> str | None:
    """Why the certificate a host has will not do (None: it will): not this CA's, other names, or ending soon."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
    except ValueError:
        return "no certificate yet" if not cert_pem.strip() else "its certificate is unreadable"
    try:
        cert.verify_directly_issued_by(authority.certificate)
    except (ValueError, TypeError, InvalidSignature):
        return "its certificate is not signed by this lab's CA"
    try:
        alternative = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "its certificate names no host"
    have = (set(alternative.get_values_for_type(x509.DNSName)),
            {str(a) for a in alternative.get_values_for_type(x509.IPAddress)})
    if have != (set(names), {str(ipaddress.ip_address(a)) for a in addresses}):
        return "its certificate names other hosts"
    if cert.not_valid_after_utc - _now() < datetime.timedelta(days=RENEW_DAYS):
        return "its certificate ends within 30 days"
    return None
