"""What the mix scenario reads off the bank site's pages (no Locust here, so unit tests can feed it fixtures).

The markers are the site's contract with the bench: `id="transfer-confirmation"` with data-from/-from-balance on a
confirmed transfer, one `data-account`/`data-balance` element per own account on /balance/, and the transfer form's
`<option value>` list of the customer's own accounts.
"""
from __future__ import annotations

import html
import re

_TAG = re.compile(r"<[a-zA-Z][^>]*>")
_ATTRIBUTE = re.compile(r'([\w-]+)\s*=\s*"([^"]*)"')
_OPTION = re.compile(r'<option[^>]*\bvalue="([^"]+)"')
_PASSWORD_FIELD = re.compile(r'<input[^>]*\bname="password"')
_CSRF = re.compile(r'name="csrfmiddlewaretoken"\s+value="([^"]+)"|value="([^"]+)"\s+name="csrfmiddlewaretoken"')


def _attributes(tag: str) -> dict[str, str]:
    return {name: html.unescape(value) for name, value in _ATTRIBUTE.findall(tag)}


def csrf_token(page: str) -> str:
    """The form's CSRF token, or "" when the page has none."""
    found = _CSRF.search(page or "")
    return (found.group(1) or found.group(2)) if found else ""


def transfer_confirmation(page: str) -> dict[str, str] | None:
    """The confirmed transfer's markers (transfer-id, from, from-balance, to, to-balance), or None when absent."""
    for tag in _TAG.findall(page or ""):
        attributes = _attributes(tag)
        if attributes.get("id") == "transfer-confirmation":
            return {name[len("data-"):]: value for name, value in attributes.items() if name.startswith("data-")}
    return None


def is_sign_in_page(page: str) -> bool:
    """True for the sign-in form (a refused password, or a page that needs a session the site no longer knows)."""
    return _PASSWORD_FIELD.search(page or "") is not None


def own_balances(page: str) -> dict[str, str]:
    """The balance sheet's "your accounts": account number -> balance as the page shows it (2 decimals)."""
    balances = {}
    for tag in _TAG.findall(page or ""):
        attributes = _attributes(tag)
        if "data-account" in attributes and "data-balance" in attributes:
            balances[attributes["data-account"]] = attributes["data-balance"]
    return balances


def own_accounts(form_page: str) -> list[str]:
    """The account numbers the transfer form offers (only the customer's own, per the site's contract)."""
    return list(dict.fromkeys(value for value in _OPTION.findall(form_page or "") if value))


def is_stale(confirmation: dict[str, str], balances: dict[str, str]) -> bool | None:
    """True when the next read of the balance sheet misses the confirmed transfer; None when it cannot tell."""
    source, confirmed = confirmation.get("from"), confirmation.get("from-balance")
    if not source or confirmed is None or source not in balances:
        return None
    return balances[source] != confirmed
