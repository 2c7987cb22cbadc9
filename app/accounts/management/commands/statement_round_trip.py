"""Ask for a customer's statement as the statements page does, wait for it to be ready, print what happened (JSON)."""
import json
import time

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from accounts.models import Statement
from accounts.tasks import request_statement


class Command(BaseCommand):
    help = ("Enqueue a statement for USER, wait until a worker (or, with no queue, this process) has prepared it; "
            'print {"status", "prepared_by", "seconds"}. Exits non-zero if it is not ready in time.')

    def add_arguments(self, parser):
        parser.add_argument("--user", required=True, help="the customer whose statement it is")
        parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for it (default 30)")

    def handle(self, *args, user, timeout, **options):
        owner = get_user_model().objects.filter(username=user).first()
        if owner is None:
            raise CommandError(f"no user {user!r}")
        started = time.monotonic()
        statement = request_statement(owner)
        while True:
            statement.refresh_from_db()
            if statement.status != Statement.PENDING or time.monotonic() - started > timeout:
                break
            time.sleep(0.1)
        result = {"statement": statement.pk, "status": statement.status, "prepared_by": statement.prepared_by,
                  "seconds": round(time.monotonic() - started, 2)}
        self.stdout.write(json.dumps(result))
        if statement.status != Statement.READY:
            raise CommandError(f"statement {statement.pk} is {statement.status} after {timeout:.0f} s")
