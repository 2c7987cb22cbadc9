"""The site's JSON API under /api/ (served by the api hosts when the lab has them): a customer's accounts and transfers,
for a client holding one of the customer's API tokens (`Authorization: Bearer <token>`)."""
import hashlib
import json
import secrets
from functools import wraps

from django.db import transaction
from django.db.models import Q
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from accounts.banking import InsufficientFunds, TransferError
from accounts.forms import TransferForm
from accounts.models import ApiToken, Transfer
from accounts.views import compute_customer_accounts, make_transfer

# A prefix says what a leaked string is (a secret scanner, a log reader); 32 random bytes are the secret.
TOKEN_PREFIX = "bank_"
TOKEN_BYTES = 32
RECENT_TRANSFERS = 50  # GET /api/transfers/: the newest this many
# Bodies are a few fields: anything bigger is not a transfer (nginx's client_max_body_size is the outer bound).
MAX_BODY_BYTES = 4096


def token_digest(token):
    """What the database keeps of a token: its SHA-256, in hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(user, name):
    """A new token for the user, replacing any of the same name; returned once, never stored (only its digest)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    with transaction.atomic():
        ApiToken.objects.filter(user=user, name=name).delete()
        ApiToken.objects.create(user=user, name=name, digest=token_digest(token))
    return token


def token_user(request):
    """The active user whose token the request's `Authorization: Bearer` header carries, or None."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith(TOKEN_PREFIX):
        return None
    found = ApiToken.objects.select_related("user").filter(digest=token_digest(token)).first()
    return found.user if found and found.user.is_active else None


def error(status, message, **details):
    return JsonResponse({"error": message, **details}, status=status)


def api_view(*methods):
    """A JSON endpoint: only these methods (405 otherwise), only with a valid token (401 otherwise), never cached,
    exempt from CSRF (a browser never adds a bearer token by itself, which is what CSRF exploits)."""
    def decorate(view):
        @csrf_exempt
        @never_cache
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if request.method not in methods:
                response = error(405, f"{request.method} is not allowed here")
                response["Allow"] = ", ".join(methods)
                return response
            user = token_user(request)
            if user is None:
                response = error(401, "a valid API token is required: Authorization: Bearer <token>")
                response["WWW-Authenticate"] = 'Bearer realm="bank"'
                return response
            request.user = user
            return view(request, *args, **kwargs)
        return wrapped
    return decorate


def transfer_json(record):
    return {
        "id": record.pk,
        "from_account": record.from_account.number,
        "to_account": record.to_account.number,
        "amount": f"{record.amount:.2f}",
        "from_balance_after": None if record.from_balance_after is None else f"{record.from_balance_after:.2f}",
        "to_balance_after": None if record.to_balance_after is None else f"{record.to_balance_after:.2f}",
        "created_at": record.created_at.isoformat(),
    }


def own_transfers(user):
    """Transfers out of or into the user's accounts (a customer moves money between their own accounts only, but an
    account's history also holds what staff moved)."""
    return (Transfer.objects.select_related("from_account", "to_account")
            .filter(Q(from_account__owner=user) | Q(to_account__owner=user)))


@api_view("GET")
def accounts(request):
    """The customer's accounts with their balances, read from the database (never a cache a transfer made stale)."""
    return JsonResponse({"accounts": compute_customer_accounts(request.user)})


@api_view("GET", "POST")
def transfers(request):
    """GET: the customer's newest transfers. POST {"from_account", "to_account", "amount"} (account numbers, a decimal
    amount): the same transfer as the web form, through the same form and banking code; 201 and the transfer."""
    if request.method == "GET":
        return JsonResponse({"transfers": [transfer_json(t) for t in own_transfers(request.user)[:RECENT_TRANSFERS]]})
    if len(request.body) > MAX_BODY_BYTES:
        return error(413, f"a transfer's body is at most {MAX_BODY_BYTES} bytes")
    try:
        data = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        return error(400, "the body must be JSON")
    if not isinstance(data, dict):
        return error(400, 'the body must be a JSON object: {"from_account", "to_account", "amount"}')
    form = TransferForm(request.user, {key: str(data.get(key, "")) for key in ("from_account", "to_account", "amount")})
    if not form.is_valid():
        return error(400, "invalid transfer", fields={k: [str(m) for m in v] for k, v in form.errors.items()})
    try:
        record = make_transfer(request.user, form)
    except InsufficientFunds as exc:
        return error(409, str(exc))
    except TransferError as exc:
        return error(400, str(exc))
    return JsonResponse(transfer_json(record), status=201)


@api_view("GET")
def transfer(request, pk):
    """One of the customer's transfers (404 for any other: someone else's is not said to exist)."""
    record = own_transfers(request.user).filter(pk=pk).first()
    return JsonResponse(transfer_json(record)) if record else error(404, "no such transfer")
