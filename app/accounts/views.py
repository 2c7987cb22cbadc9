"""Views for the bank site: home, balance sheet, report, transfers and the probe endpoints."""
import csv
import logging
from decimal import Decimal

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.db import DatabaseError, connection
from django.db.models import Avg, Count, DecimalField, Max, Sum, Value
from django.db.models.functions import Coalesce
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_safe

from accounts.banking import TransferError, transfer_funds
from accounts.forms import TransferForm
from accounts.models import Account, Bank

logger = logging.getLogger(__name__)

BALANCE_CACHE_KEY = "bank_balance"
BALANCE_CACHE_SECONDS = 30

CENT = Decimal("0.01")
# Wider than the column: a sum over many accounts can exceed 12 digits.
MONEY = DecimalField(max_digits=14, decimal_places=2)
ZERO = Value(Decimal("0.00"), output_field=MONEY)


def _cents(value):
    # SQLite hands aggregates back as 150.5 or 1000 while PostgreSQL keeps the
    # column's scale; quantizing makes both backends print money the same way.
    return Decimal(value).quantize(CENT)


def _or_zero(aggregate):
    # Aggregates over no rows are NULL; a bank without accounts should show 0.00.
    return Coalesce(aggregate, ZERO, output_field=MONEY)


@require_safe
def home(request):
    banks = Bank.objects.annotate(num_accounts=Count("accounts")).order_by("name")
    return render(request, "accounts/home.html", {"banks": banks})


@require_safe
def bank_detail(request, pk):
    bank = get_object_or_404(Bank, pk=pk)
    accounts = bank.accounts.order_by("number")
    return render(request, "accounts/bank_detail.html", {"bank": bank, "accounts": accounts})


def compute_balance_sheet():
    """Per-bank totals straight from the database (one aggregate query)."""
    rows = list(
        Bank.objects.annotate(total=_or_zero(Sum("accounts__balance")), num_accounts=Count("accounts"))
        .order_by("name")
        .values("id", "name", "total", "num_accounts")
    )
    for row in rows:
        row["total"] = _cents(row["total"])
    return {
        "banks": rows,
        "total": sum((row["total"] for row in rows), Decimal("0.00")),
        "computed_at": timezone.now(),
    }


def get_balance_sheet():
    """The balance sheet, from Django's cache when a fresh copy is there.

    The cache framework, not a module-level variable, holds it: with several
    worker processes on several hosts ("shared nothing") a global lives in one
    process, never expires and cannot be invalidated. With memcached configured
    all hosts share one copy; with the default locmem each process has its own,
    and the 30 s timeout bounds how stale any of them can be.
    """
    sheet = cache.get(BALANCE_CACHE_KEY)
    if sheet is None:
        sheet = compute_balance_sheet()
        cache.set(BALANCE_CACHE_KEY, sheet, BALANCE_CACHE_SECONDS)
    return sheet


@require_safe
def balance(request):
    sheet = get_balance_sheet()
    return render(
        request,
        "accounts/balance.html",
        {"sheet": sheet, "cache_seconds": BALANCE_CACHE_SECONDS},
    )


def build_report():
    """Everything the report shows, computed in the database and held in memory."""
    banks = list(
        Bank.objects.annotate(
            num_accounts=Count("accounts"),
            total=_or_zero(Sum("accounts__balance")),
            average=_or_zero(Avg("accounts__balance")),
            largest=_or_zero(Max("accounts__balance")),
        ).order_by("name")
    )
    for bank in banks:
        bank.total, bank.average, bank.largest = (
            _cents(bank.total), _cents(bank.average), _cents(bank.largest)
        )
    top_accounts = list(Account.objects.select_related("bank").order_by("-balance", "number")[:10])
    return {
        "banks": banks,
        "top_accounts": top_accounts,
        "num_accounts": sum(bank.num_accounts for bank in banks),
        "total": sum((bank.total for bank in banks), Decimal("0.00")),
        "generated_at": timezone.now(),
    }


@require_safe
def report(request):
    data = build_report()
    if request.GET.get("format") == "csv":
        # Written straight into the response: no temporary file, so any web host
        # can serve any request and nothing needs cleaning up afterwards.
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="bank-report.csv"'
        writer = csv.writer(response)
        writer.writerow(["bank", "accounts", "total", "average", "largest"])
        for bank in data["banks"]:
            writer.writerow([bank.name, bank.num_accounts, bank.total, bank.average, bank.largest])
        return response
    return render(request, "accounts/report.html", {"report": data})


def hello(request):
    """Constant response with no database or template work, to measure server overhead."""
    return HttpResponse("hello", content_type="text/plain; charset=utf-8")


@never_cache
def health(request):
    """Liveness probe for load balancers and deploy scripts: is the database reachable?"""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        logger.warning("health check: database unreachable: %s", exc)
        return JsonResponse({"status": "error", "db": False}, status=503)
    return JsonResponse({"status": "ok", "db": True})


@login_required
@require_http_methods(["GET", "POST"])
def transfer(request):
    form = TransferForm(request.POST) if request.method == "POST" else TransferForm()
    if form.is_bound and form.is_valid():
        source = form.cleaned_data["from_account"]
        target = form.cleaned_data["to_account"]
        amount = form.cleaned_data["amount"]
        try:
            transfer_funds(source.pk, target.pk, amount)
        except TransferError as exc:
            form.add_error(None, str(exc))
        else:
            # The sheet would otherwise show the old totals for up to 30 s.
            cache.delete(BALANCE_CACHE_KEY)
            messages.success(
                request, f"Transferred {amount} from {source.number} to {target.number}."
            )
            return redirect("balance")
    return render(request, "accounts/transfer.html", {"form": form})
