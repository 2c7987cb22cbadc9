"""Management command that makes API tokens (shown once, stored hashed) for customers, or revokes them."""
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from accounts.api import issue_token
from accounts.management.commands.load_sample_data import CUSTOMER_USERNAME, MAX_CUSTOMERS
from accounts.models import ApiToken

DEFAULT_NAME = "default"


class Command(BaseCommand):
    help = (
        "Make a new API token named NAME for each USER (and for customer0001..N with --customers N), replacing any "
        "token of that name, and print 'USER TOKEN' per line: the only time a token is shown (the site keeps its "
        "SHA-256 only). With --revoke, delete those tokens instead."
    )

    def add_arguments(self, parser):
        parser.add_argument("users", nargs="*", metavar="USER", help="usernames")
        parser.add_argument("--customers", type=int, default=0,
                            help=f"also {CUSTOMER_USERNAME.format(1)} .. {CUSTOMER_USERNAME.format(MAX_CUSTOMERS)}: the first N")
        parser.add_argument("--name", default=DEFAULT_NAME, help=f"the token's name (default {DEFAULT_NAME!r})")
        parser.add_argument("--revoke", action="store_true", help="delete the named token of each user")

    def handle(self, *args, users, customers, name, revoke, **options):
        if not 0 <= customers <= MAX_CUSTOMERS:
            raise CommandError(f"--customers must be between 0 and {MAX_CUSTOMERS}, got {customers}")
        if not name.strip() or len(name) > ApiToken._meta.get_field("name").max_length:
            raise CommandError("--name must be 1 to 50 characters")
        wanted = list(dict.fromkeys([*users, *(CUSTOMER_USERNAME.format(k) for k in range(1, customers + 1))]))
        if not wanted:
            raise CommandError("name at least one USER, or --customers N")
        found = {u.username: u for u in get_user_model().objects.filter(username__in=wanted)}
        missing = [u for u in wanted if u not in found]
        if missing:
            raise CommandError(f"no such user: {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
        if revoke:
            deleted, _ = ApiToken.objects.filter(user__in=found.values(), name=name).delete()
            self.stdout.write(f"revoked {deleted} token(s) named {name!r}")
            return
        for username in wanted:
            self.stdout.write(f"{username} {issue_token(found[username], name)}")
