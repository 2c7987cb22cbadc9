"""Bring each search server's index level with the database (accounts it misses or has too many of), or say it is."""
from django.conf import settings
from django.core.management import BaseCommand, call_command
from haystack.query import SearchQuerySet

from accounts.models import Account


class Command(BaseCommand):
    help = ("Index every account on each search server whose index holds another number of accounts than the "
            "database (the realtime updates missed some: the server was down, or it is new).")

    def handle(self, *args, **options):
        if not settings.BANK_SEARCH_ALIASES:
            self.stdout.write("no search server: the search page queries the database")
            return
        expected = Account.objects.count()
        for alias in settings.BANK_SEARCH_ALIASES:
            held = SearchQuerySet(using=alias).models(Account).count()
            if held == expected:
                self.stdout.write(f"{alias}: in step ({held} accounts)")
                continue
            call_command("update_index", "accounts.Account", using=[alias], remove=True, verbosity=0)
            self.stdout.write(f"{alias}: indexed {expected} accounts (it held {held})")
