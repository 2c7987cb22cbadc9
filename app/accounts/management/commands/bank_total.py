"""Management command that prints the money in the bank as one line of JSON: every balance summed, and the counts."""
import json
from decimal import Decimal

from django.core.management.base import BaseCommand
from django.db import transaction
from django.db.models import Count, Sum

from accounts.models import Account, Transfer


class Command(BaseCommand):
    help = (
        'Print {"total": "<sum of every balance>", "accounts": N, "transfers": M} on one line: transfers move '
        "money, they never make or lose any, so the total before and after a load test must be the same."
    )

    def handle(self, *args, **options):
        # One transaction: on PostgreSQL both queries see the same committed transfers (REPEATABLE READ would be
        # stricter; the sum itself is one statement, so it is consistent whatever the counts see).
        with transaction.atomic():
            figures = Account.objects.aggregate(total=Sum("balance"), accounts=Count("id"))
            transfers = Transfer.objects.count()
        total = (figures["total"] or Decimal("0")).quantize(Decimal("0.01"))
        self.stdout.write(json.dumps({"total": str(total), "accounts": figures["accounts"], "transfers": transfers}))
