"""Management command that loads a fixed, deterministic set of sample banks, accounts and a demo user."""
import os
import random
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.models import Account, Bank

BANK_NAMES = ["First Bank of Lawrence", "Kansas Prairie Savings", "Wakarusa Trust"]
NUM_ACCOUNTS = 200
DEMO_USERNAME = "demo"
# Fixed seed: every host and every run derive exactly the same accounts.
SEED = 20090301

FIRST_NAMES = [
    "Ada", "Boris", "Chidi", "Dana", "Elif", "Farid", "Greta", "Hiro", "Ines", "Jonas",
    "Kofi", "Lena", "Mateo", "Noor", "Olga", "Priya", "Quinn", "Rosa", "Sven", "Tariq",
]
LAST_NAMES = [
    "Adams", "Barros", "Chen", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad", "Ivanova",
    "Jensen", "Kowalski", "Lopez", "Moreau", "Nakamura", "Okafor",
]


def sample_accounts():
    """The sample accounts as (bank name, number, owner, balance) tuples, identical on every call."""
    rng = random.Random(SEED)
    accounts = []
    for i in range(NUM_ACCOUNTS):
        bank = BANK_NAMES[i % len(BANK_NAMES)]
        number = f"AC{i + 1:05d}"
        # i -> (i % 20, (i + 2 * (i // 20)) % 15) is one-to-one for i < 300, so every
        # owner name is distinct while neighbouring accounts still get mixed surnames.
        first = FIRST_NAMES[i % len(FIRST_NAMES)]
        last = LAST_NAMES[(i + 2 * (i // len(FIRST_NAMES))) % len(LAST_NAMES)]
        owner = f"{first} {last}"
        balance = Decimal(rng.randint(1_000, 2_500_000)).scaleb(-2)  # cents -> 2 d.p.
        accounts.append((bank, number, owner, balance))
    return accounts


class Command(BaseCommand):
    help = (
        f"Create {len(BANK_NAMES)} sample banks, {NUM_ACCOUNTS} accounts and the user "
        f"'{DEMO_USERNAME}'. Safe to run again: only what is missing is created and existing "
        "rows (balances, the demo password) are left alone."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--demo-password",
            default=os.environ.get("BANK_DEMO_PASSWORD"),
            help=(
                f"Password for the '{DEMO_USERNAME}' user; required only when that user does "
                "not exist yet. Defaults to $BANK_DEMO_PASSWORD, which keeps it out of ps."
            ),
        )
        parser.add_argument(
            "--sync-demo-password",
            action="store_true",
            help=(
                f"Also set an existing '{DEMO_USERNAME}' user's password to --demo-password when it "
                "differs (a deployment whose secrets were generated anew)."
            ),
        )

    def handle(self, *args, **options):
        User = get_user_model()
        password = options["demo_password"]
        need_user = not User.objects.filter(username=DEMO_USERNAME).exists()
        # Checked before writing anything so a failed run leaves no half-loaded data.
        if need_user and not password:
            raise CommandError(
                f"user '{DEMO_USERNAME}' does not exist: pass --demo-password "
                "(or set BANK_DEMO_PASSWORD) to create it"
            )

        with transaction.atomic():
            banks = {bank.name: bank for bank in Bank.objects.filter(name__in=BANK_NAMES)}
            new_banks = [Bank(name=name) for name in BANK_NAMES if name not in banks]
            for bank in new_banks:
                bank.save()
                banks[bank.name] = bank

            specs = sample_accounts()
            existing = set(
                Account.objects.filter(number__in=[spec[1] for spec in specs]).values_list(
                    "number", flat=True
                )
            )
            new_accounts = [
                Account(bank=banks[bank], number=number, owner=owner, balance=balance)
                for bank, number, owner, balance in specs
                if number not in existing
            ]
            Account.objects.bulk_create(new_accounts)

            if need_user:
                User.objects.create_user(DEMO_USERNAME, password=password)

        if new_banks or new_accounts:
            self.stdout.write(f"created {len(new_banks)} banks, {len(new_accounts)} accounts")
        else:
            self.stdout.write("sample data already loaded")
        if need_user:
            self.stdout.write(f"created user {DEMO_USERNAME}")
        elif options["sync_demo_password"] and password and not self._password_matches(User, password):
            user = User.objects.get(username=DEMO_USERNAME)
            user.set_password(password)
            user.save(update_fields=["password"])
            self.stdout.write(f"updated the password of user {DEMO_USERNAME}")
        else:
            self.stdout.write(f"user {DEMO_USERNAME} already exists, left unchanged")

    @staticmethod
    def _password_matches(User, password):
        return User.objects.get(username=DEMO_USERNAME).check_password(password)
