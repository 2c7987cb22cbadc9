"""Work taken off the request path: a customer's monthly statement, prepared by a Celery worker on a q host (or in
the request itself when the site has no queue: Celery's always-eager mode)."""
import csv
import io
import logging
import socket
from datetime import datetime, time, timedelta

from celery import shared_task
from kombu.exceptions import OperationalError as QueueUnreachable
from django.db.models import Q
from django.utils import timezone

from accounts.models import Account, Statement, Transfer

logger = logging.getLogger(__name__)

STATEMENT_COLUMNS = ["date", "account", "counterpart", "amount", "balance_after"]


def month_bounds(month):
    """The first instant of the month and of the next one, in the site's time zone."""
    start = timezone.make_aware(datetime.combine(month, time.min))
    following = (month.replace(day=28) + timedelta(days=4)).replace(day=1)
    return start, timezone.make_aware(datetime.combine(following, time.min))


def statement_csv(owner, month):
    """The owner's statement for a month as CSV: each transfer in or out of their accounts (amount signed from the
    account's side, its balance after it), then each account's balance now."""
    start, end = month_bounds(month)
    accounts = list(Account.objects.filter(owner=owner).order_by("number"))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(STATEMENT_COLUMNS)
    for account in accounts:
        transfers = (Transfer.objects.filter(Q(from_account=account) | Q(to_account=account),
                                             created_at__gte=start, created_at__lt=end)
                     .select_related("from_account", "to_account").order_by("created_at", "id"))
        for transfer in transfers:
            outgoing = transfer.from_account_id == account.pk
            writer.writerow([
                timezone.localtime(transfer.created_at).strftime("%Y-%m-%d %H:%M"), account.number,
                (transfer.to_account if outgoing else transfer.from_account).number,
                f"{-transfer.amount if outgoing else transfer.amount:.2f}",
                "" if (after := transfer.from_balance_after if outgoing else transfer.to_balance_after) is None
                else f"{after:.2f}",
            ])
    for account in accounts:
        writer.writerow([timezone.localtime().strftime("%Y-%m-%d %H:%M"), account.number, "balance", "",
                         f"{account.balance:.2f}"])
    return text.getvalue()


@shared_task(ignore_result=True)
def prepare_statement(statement_id):
    """Prepare one pending statement; a statement already ready is left as it is (a task delivered twice)."""
    statement = Statement.objects.select_related("owner").filter(pk=statement_id).first()
    if statement is None or statement.status == Statement.READY:
        return
    body = statement_csv(statement.owner, statement.month)
    Statement.objects.filter(pk=statement_id).exclude(status=Statement.READY).update(
        status=Statement.READY, body=body, prepared_at=timezone.now(), prepared_by=socket.gethostname())


def request_statement(owner):
    """A new statement of this month for the owner, its preparation enqueued (run at once when the site has no
    queue); marked failed when the queue does not take it. What the statements page and `statement_round_trip` do."""
    statement = Statement.objects.create(owner=owner, month=timezone.localdate().replace(day=1))
    try:
        prepare_statement.delay(statement.pk)
    except QueueUnreachable as exc:
        logger.warning("statement %s: the queue did not take it: %s", statement.pk, exc)
        Statement.objects.filter(pk=statement.pk).update(status=Statement.FAILED)
    return statement
