"""Views for the bank site: home, balance sheet, report, transfers and the probe endpoints.

What anyone may see is what a bank publishes: its banks' account counts and totals. One account's balance is shown
to the customer who owns it, and to staff.
"""
import csv
import io
import logging
from decimal import Decimal
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.db import DatabaseError, connection
from django.db.models import Avg, Count, DecimalField, Max, Sum, Value
from django.db.models.functions import Coalesce
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_safe

from accounts.banking import TransferError, transfer_funds
from accounts.forms import TransferForm
from accounts.models import Account, Bank, Statement, Transfer
from accounts.search import DATABASE, MAX_QUERY_LENGTH, find_accounts
from accounts.tasks import request_statement

logger = logging.getLogger(__name__)

BALANCE_CACHE_KEY = "bank_balance"
BALANCE_CACHE_SECONDS = 30
# One customer's own accounts on /balance/, cached per customer for as long as the sheet and deleted by the process
# that confirms a transfer: another process (another web host, or another worker with the local-memory cache) may
# still serve its own stale copy until the timeout; a shared cache (memcached) has only the one copy.
CUSTOMER_CACHE_KEY = "customer_accounts:{user_id}"

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
    """A bank's published figures; its accounts one by one only to staff."""
    bank = get_object_or_404(
        Bank.objects.annotate(num_accounts=Count("accounts"), total=_or_zero(Sum("accounts__balance"))), pk=pk
    )
    bank.total = _cents(bank.total)
    accounts = bank.accounts.select_related("owner").order_by("number") if request.user.is_staff else None
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


# The slide's global (the "global_balance" anti-pattern, `lab demo shared-nothing`): one copy per process, computed
# on its first request and never again, so no transfer and no timeout ever reaches it.
BALANCE = None
# The slide's report hand-over (the "tmp_report" anti-pattern): written by one request, read by the next, on whichever
# web host each lands.
TMP_REPORT = "/tmp/report.txt"


def get_balance_sheet():
    """The balance sheet, from Django's cache when a fresh copy is there.

    The cache framework, not a module-level variable, holds it: with several
    worker processes on several hosts ("shared nothing") a global lives in one
    process, never expires and cannot be invalidated. With memcached configured
    all hosts share one copy; with the default locmem each process has its own,
    and the 30 s timeout bounds how stale any of them can be.
    """
    if "global_balance" in settings.BANK_ANTIPATTERNS:
        global BALANCE
        if not BALANCE:
            BALANCE = compute_balance_sheet()
        return BALANCE
    sheet = cache.get(BALANCE_CACHE_KEY)
    if sheet is None:
        sheet = compute_balance_sheet()
        cache.set(BALANCE_CACHE_KEY, sheet, BALANCE_CACHE_SECONDS)
    return sheet


def customer_cache_key(user):
    return CUSTOMER_CACHE_KEY.format(user_id=user.pk)


def compute_customer_accounts(user):
    """One customer's accounts straight from the database: number, bank and balance (2 decimals) each."""
    return [
        {"number": number, "bank": bank, "balance": f"{_cents(balance):.2f}"}
        for number, bank, balance in Account.objects.filter(owner=user)
        .order_by("number")
        .values_list("number", "bank__name", "balance")
    ]


def get_customer_accounts(user):
    """The customer's own accounts through Django's cache (computed on a miss, kept BALANCE_CACHE_SECONDS)."""
    key = customer_cache_key(user)
    accounts = cache.get(key)
    if accounts is None:
        accounts = compute_customer_accounts(user)
        cache.set(key, accounts, BALANCE_CACHE_SECONDS)
    return accounts


@require_safe
def balance(request):
    sheet = get_balance_sheet()
    own = get_customer_accounts(request.user) if request.user.is_authenticated else None
    # The sheet's age by this process's own clock: what step 5's check holds to the cache's timeout.
    age = (timezone.now() - sheet["computed_at"]).total_seconds()
    return render(
        request,
        "accounts/balance.html",
        {"sheet": sheet, "sheet_age": f"{age:.1f}", "cache_seconds": BALANCE_CACHE_SECONDS, "own_accounts": own},
    )


PUBLIC_COLUMNS = ["bank", "accounts", "total"]
# An average or a largest balance can be one customer's balance (a bank with one account, or the richest one):
# staff only, like the top accounts.
STAFF_COLUMNS = PUBLIC_COLUMNS + ["average", "largest"]


def build_report(staff=False):
    """Everything the report shows, computed in the database and held in memory: per-bank counts and totals for
    anyone; averages, largest balances and the top accounts only for staff."""
    figures = {"num_accounts": Count("accounts"), "total": _or_zero(Sum("accounts__balance"))}
    if staff:
        figures.update(average=_or_zero(Avg("accounts__balance")), largest=_or_zero(Max("accounts__balance")))
    banks = list(Bank.objects.annotate(**figures).order_by("name"))
    for bank in banks:
        for name in figures:
            if name != "num_accounts":
                setattr(bank, name, _cents(getattr(bank, name)))
    top_accounts = (
        list(Account.objects.select_related("bank", "owner").order_by("-balance", "number")[:10]) if staff else None
    )
    return {
        "banks": banks,
        "staff": staff,
        "top_accounts": top_accounts,
        "num_accounts": sum(bank.num_accounts for bank in banks),
        "total": sum((bank.total for bank in banks), Decimal("0.00")),
        "generated_at": timezone.now(),
    }


@require_safe
def report(request):
    staff = request.user.is_staff
    data = build_report(staff)
    if request.GET.get("format") == "csv":
        # Written straight into the response: no temporary file, so any web host
        # can serve any request and nothing needs cleaning up afterwards.
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="bank-report.csv"'
        writer = csv.writer(response)
        columns = STAFF_COLUMNS if staff else PUBLIC_COLUMNS
        writer.writerow(columns)
        for bank in data["banks"]:
            row = {"bank": bank.name, "accounts": bank.num_accounts, "total": bank.total}
            if staff:
                row.update(average=bank.average, largest=bank.largest)
            writer.writerow([row[column] for column in columns])
        return response
    return render(request, "accounts/report.html", {"report": data})


def report_csv(banks):
    """The public report as CSV text: bank, accounts, total."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(PUBLIC_COLUMNS)
    writer.writerows([bank.name, bank.num_accounts, bank.total] for bank in banks)
    return text.getvalue()


@login_required
@require_http_methods(["GET", "POST"])
def generate_report(request):
    """The slides' "generate a report, then view it": the report's name goes with the redirect, so whichever web host
    the view lands on builds the same report. With the "tmp_report" anti-pattern it goes through /tmp/report.txt
    instead, which only the host that wrote it has ("Filesystem? What filesystem?")."""
    if request.method == "GET":
        return render(request, "accounts/generate_report.html")
    name = request.POST.get("name", "").strip()[:40] or "report"
    if "tmp_report" in settings.BANK_ANTIPATTERNS:
        with open(TMP_REPORT, "w") as handle:
            handle.write(f"{name}\n{report_csv(build_report()['banks'])}")
        return redirect("view_report")
    return redirect(f"{reverse('view_report')}?{urlencode({'name': name})}")


@login_required
@require_safe
def view_report(request):
    """The report generate_report named: built here from the database, or (anti-pattern) read from /tmp/report.txt."""
    if "tmp_report" in settings.BANK_ANTIPATTERNS:
        try:
            with open(TMP_REPORT) as handle:
                name, body = handle.read().split("\n", 1)
        except FileNotFoundError:
            raise Http404(f"no {TMP_REPORT} on this web host") from None
    else:
        name, body = request.GET.get("name", "report")[:40], report_csv(build_report()["banks"])
    response = HttpResponse(body, content_type="text/csv; charset=utf-8")
    response["X-Report-Name"] = name
    return response


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
    """Move money between two of the signed-in customer's own accounts; then show its confirmation."""
    form = TransferForm(request.user, request.POST if request.method == "POST" else None)
    if form.is_bound and form.is_valid():
        try:
            record = make_transfer(request.user, form)
        except TransferError as exc:
            form.add_error(None, str(exc))
        else:
            # Post/redirect/get: reloading the confirmation shows it again, it does not move the money again.
            return redirect("transfer_done", pk=record.pk)
    return render(request, "accounts/transfer.html", {"form": form})


def make_transfer(user, form):
    """The transfer a valid TransferForm asks for, made by accounts.banking under its row locks, and the cached figures
    it changed dropped: the transfer page and the API's POST /api/transfers/ both come here. Raises TransferError."""
    record = transfer_funds(form.cleaned_data["from_account"].pk, form.cleaned_data["to_account"].pk,
                            form.cleaned_data["amount"], owner=user)
    # This process's cache (or the shared one) would otherwise show the old figures for up to 30 s.
    cache.delete_many([BALANCE_CACHE_KEY, customer_cache_key(user)])
    return record


@login_required
@require_safe
def transfer_done(request, pk):
    """A transfer's confirmation, read from the database (never the cache), for the customer who made it only."""
    record = get_object_or_404(
        Transfer.objects.select_related("from_account", "to_account"), pk=pk, from_account__owner=request.user
    )
    return render(request, "accounts/transfer_done.html", {"transfer": record})


@login_required
@require_safe
def search(request):
    """Accounts by holder, number or bank: a customer finds their own, staff any (through Haystack's search servers
    when the lab has them, else the database)."""
    query = request.GET.get("q", "").strip()[:MAX_QUERY_LENGTH]
    accounts, source = find_accounts(request.user, query) if query else ([], None)
    return render(request, "accounts/search.html", {
        "query": query, "accounts": accounts, "source": source, "from_database": source == DATABASE,
    })


# How often the "being prepared" page reloads itself until its statement is ready.
STATEMENT_REFRESH_S = 2


@login_required
@require_http_methods(["GET", "POST"])
def statements(request):
    """The customer's statements, and a button asking for this month's: the page enqueues its preparation (a q host's
    worker does it; with no queue, the request itself) and sends the customer to the statement, "being prepared"
    until it is ready."""
    if request.method == "GET":
        own = Statement.objects.filter(owner=request.user).only("id", "month", "status", "requested_at")[:20]
        return render(request, "accounts/statements.html", {"statements": own})
    return redirect("statement", pk=request_statement(request.user).pk)


@login_required
@require_safe
def statement(request, pk):
    """One statement, for its owner only: "being prepared" (the page reloads itself), the statement, or (the queue
    was unreachable) a note to ask again. `?format=csv` downloads a ready one."""
    found = get_object_or_404(Statement, pk=pk, owner=request.user)
    if found.status == Statement.READY and request.GET.get("format") == "csv":
        response = HttpResponse(found.body, content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="statement-{found.month:%Y-%m}.csv"'
        return response
    rows = list(csv.reader(io.StringIO(found.body))) if found.status == Statement.READY else []
    return render(request, "accounts/statement.html", {
        "statement": found, "header": rows[:1], "rows": rows[1:], "refresh_s": STATEMENT_REFRESH_S,
    })
