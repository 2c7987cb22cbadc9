"""Secrets kept off command lines and out of output: SCRAM verifiers made on the machine, redaction of known values.

What a recipe does with a secret (see docs/architecture.md): a password reaches PostgreSQL as `scram_verifier(...)`
inside SQL that psql reads from stdin (`t.run("psql -q", user="postgres", stdin=sql)`), a program reads it from
stdin or from a 0600 file written whole by `t.file(...)`/`t.secret_file(...)`, and every error message goes
through `redact(...)` with the lab's secret values.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from typing import Iterable

SCRAM_ITERATIONS = 4096  # PostgreSQL's default scram_iterations
REDACTED = "[secret]"
# A verifier is not the password, but it is what an offline guesser needs: psql may echo one in an error.
VERIFIER = re.compile(r"SCRAM-SHA-256\$[A-Za-z0-9+/=:$]+")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores in pg_authid.rolpassword for this password (RFC 5802/7677);
    `CREATE/ALTER ROLE ... PASSWORD '<verifier>'` stores it as it is, so the password itself never reaches the host."""
    salt = os.urandom(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return f"SCRAM-SHA-256${iterations}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"


def scram_matches(verifier: str, password: str) -> bool:
    """Whether a pg_authid SCRAM-SHA-256 verifier was made from this password (so the role is left alone)."""
    try:
        method, params, keys = verifier.split("$")
        iterations_text, salt_text = params.split(":")
        stored_key = keys.split(":")[0]
        iterations, salt = int(iterations_text), base64.b64decode(salt_text, validate=True)
    except ValueError:  # binascii.Error is a ValueError too: anything malformed is "does not match"
        return False
    if method != "SCRAM-SHA-256" or iterations < 1:
        return False
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return hmac.compare_digest(_b64(hashlib.sha256(client_key).digest()), stored_key)


def sql_literal(value: str) -> str:
    """A SQL string literal (quotes doubled); for SQL sent on stdin, never pasted into a command line."""
    return "'" + value.replace("'", "''") + "'"


def redact(text: str, secret_values: Iterable[str]) -> str:
    """`text` with every secret value (and any SCRAM verifier) replaced by [secret]; longest first, so a secret
    that contains another is hidden whole."""
    for value in sorted({v for v in secret_values if v}, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return VERIFIER.sub(REDACTED, text)
