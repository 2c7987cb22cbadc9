"""Unit tests for lab.secrets.scram_matches against SCRAM-SHA-256 verifiers built here per RFC 5802/7677."""
from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from lab.secrets import scram_matches


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def scram_verifier(password: str, salt: bytes = b"0123456789abcdef", iterations: int = 4096) -> str:
    """What PostgreSQL stores in pg_authid.rolpassword for password_encryption = scram-sha-256."""
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def test_the_helper_matches_a_published_verifier_shape():
    verifier = scram_verifier("pw")
    method, params, keys = verifier.split("$")
    assert method == "SCRAM-SHA-256"
    assert params == "4096:MDEyMzQ1Njc4OWFiY2RlZg=="
    assert [len(base64.b64decode(k)) for k in keys.split(":")] == [32, 32]


@pytest.mark.parametrize("password", ["pw", "s3cr3t-Ünïcødé", "x" * 64, "with 'quotes' and $dollars:colons"])
def test_right_password_matches(password):
    assert scram_matches(scram_verifier(password), password) is True


def test_wrong_password_does_not_match():
    verifier = scram_verifier("correct horse")
    assert scram_matches(verifier, "correct horsE") is False
    assert scram_matches(verifier, "") is False
    assert scram_matches(verifier, "correct horse ") is False


def test_salt_and_iterations_are_taken_from_the_verifier():
    verifier = scram_verifier("pw", salt=b"another-salt-16b", iterations=10000)
    assert scram_matches(verifier, "pw") is True
    tampered = verifier.replace("10000:", "4096:")
    assert scram_matches(tampered, "pw") is False


def test_server_key_does_not_stand_in_for_stored_key():
    method, params, keys = scram_verifier("pw").split("$")
    stored, server = keys.split(":")
    assert scram_matches(f"{method}${params}${server}:{stored}", "pw") is False


@pytest.mark.parametrize(
    "verifier",
    [
        "md5" + hashlib.md5(b"pwbank").hexdigest(),  # PostgreSQL's old md5 format: md5(password || rolname)
        "",
        "garbage",
        "SCRAM-SHA-256$4096:c2FsdA==",  # keys missing
        "SCRAM-SHA-1$4096:c2FsdA==$a:b",
        "SCRAM-SHA-256$4096:c2FsdA==$:",
        "SCRAM-SHA-256$4096$c2FsdA==$a:b",
    ],
)
def test_md5_and_garbage_verifiers_do_not_match(verifier):
    assert scram_matches(verifier, "pw") is False


def test_md5_verifier_of_the_same_password_does_not_match():
    assert scram_matches("md5" + hashlib.md5(b"pw" + b"bank").hexdigest(), "pw") is False
    assert scram_matches(scram_verifier("pw").replace("SCRAM-SHA-256", "md5"), "pw") is False


@pytest.mark.parametrize(
    "verifier",
    [
        "SCRAM-SHA-256$abc:c2FsdA==$a:b",  # iterations not a number
        "SCRAM-SHA-256$0:c2FsdA==$a:b",  # PBKDF2 refuses 0 iterations
        "SCRAM-SHA-256$4096:c2Fsd$a:b",  # salt not valid base64
    ],
)
def test_malformed_scram_verifiers_do_not_match(verifier):
    assert scram_matches(verifier, "pw") is False
