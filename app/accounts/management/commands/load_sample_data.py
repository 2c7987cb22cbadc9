"""Management command that loads a fixed, deterministic set of sample banks, accounts, a demo user and (on request)
numbered customers for load tests."""
import os
import random
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import check_password, make_password
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.models import Account, Bank

BANK_NAMES = ["First Bank of Lawrence", "Kansas Prairie Savings", "Wakarusa Trust"]
NUM_ACCOUNTS = 200
DEMO_USERNAME = "demo"
# The demo user's own accounts (migration 0002 gives them to an existing demo user the same way).
DEMO_ACCOUNTS = ("AC00001", "AC00002")
# Customers for load tests: customer0001 ... customer9999, two accounts each.
CUSTOMER_USERNAME = "customer{:04d}"
CUSTOMER_ACCOUNT = "CU{:04d}-{}"
CUSTOMER_ACCOUNTS = 2
CUSTOMER_FUNDS = Decimal("1000.00")
MAX_CUSTOMERS = 9999
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
    """The sample accounts as (bank name, number, holder name, balance) tuples, identical on every call."""
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


def customer_accounts(k):
    """Customer k's accounts as (bank name, number) pairs: in two different banks, the same on every call."""
    return [
        (BANK_NAMES[(k + i) % len(BANK_NAMES)], CUSTOMER_ACCOUNT.format(k, i + 1)) for i in range(CUSTOMER_ACCOUNTS)
    ]


class Command(BaseCommand):
    help = (
        f"Create {len(BANK_NAMES)} sample banks, {NUM_ACCOUNTS} accounts and the user "
        f"'{DEMO_USERNAME}' (owner of {' and '.join(DEMO_ACCOUNTS)}); with --customers N also the users "
        f"{CUSTOMER_USERNAME.format(1)}..., each owning {CUSTOMER_ACCOUNTS} accounts funded {CUSTOMER_FUNDS}. "
        "Safe to run again: only what is missing is created and existing rows (balances, passwords) are left alone."
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
                "differs (a deployment whose secrets were generated anew); the customers' too."
            ),
        )
        parser.add_argument(
            "--customers",
            type=int,
            default=0,
            metavar="N",
            help=(
                f"Also make customers {CUSTOMER_USERNAME.format(1)} to {CUSTOMER_USERNAME.format(MAX_CUSTOMERS)} "
                f"(the first N), with the demo password, each owning {CUSTOMER_ACCOUNTS} accounts."
            ),
        )

    def handle(self, *args, **options):
        User = get_user_model()
        password = options["demo_password"]
        customers = options["customers"]
        need_user = not User.objects.filter(username=DEMO_USERNAME).exists()
        # Checked before writing anything so a failed run leaves no half-loaded data.
        if not 0 <= customers <= MAX_CUSTOMERS:
            raise CommandError(f"--customers must be between 0 and {MAX_CUSTOMERS}, got {customers}")
        if need_user and not password:
            raise CommandError(
                f"user '{DEMO_USERNAME}' does not exist: pass --demo-password "
                "(or set BANK_DEMO_PASSWORD) to create it"
            )
        missing_customers = self._missing_customers(User, customers)
        if missing_customers and not password:
            raise CommandError(
                f"{len(missing_customers)} customer(s) do not exist: pass --demo-password "
                "(or set BANK_DEMO_PASSWORD), their password"
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
                Account(bank=banks[bank], number=number, holder=holder, balance=balance)
                for bank, number, holder, balance in specs
                if number not in existing
            ]
            Account.objects.bulk_create(new_accounts)

            if need_user:
                User.objects.create_user(DEMO_USERNAME, password=password)
            demo = User.objects.get(username=DEMO_USERNAME)
            given = Account.objects.filter(number__in=DEMO_ACCOUNTS, owner__isnull=True).update(owner=demo)
            made = self._load_customers(User, banks, customers, missing_customers, password)

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
        if given:
            self.stdout.write(f"updated the owner of {given} account(s): user {DEMO_USERNAME}")
        if customers:
            users, accounts = made
            if users or accounts:
                self.stdout.write(f"customers: created {users} users and {accounts} accounts ({customers} wanted)")
            else:
                self.stdout.write(f"customers: {customers} already loaded")
            if options["sync_demo_password"] and password:
                synced = self._sync_customer_passwords(User, customers, password)
                if synced:
                    self.stdout.write(f"updated the password of {synced} customers")
        if new_accounts or made[1]:
            self._index_new_accounts()

    def _index_new_accounts(self):
        """bulk_create sends no post_save, so the search servers never heard of these accounts: bring their index
        level now (search_catch_up), or say how to later: the accounts are made either way."""
        if not settings.BANK_SEARCH_ALIASES:
            return
        try:
            call_command("search_catch_up", stdout=self.stdout)
        except Exception as error:  # a search server down: the site searches the next one, then the database
            self.stdout.write(f"search index not updated ({type(error).__name__}: {error}); "
                              f"`manage.py search_catch_up` brings it level later")

    @staticmethod
    def _customer_names(customers):
        return [CUSTOMER_USERNAME.format(k) for k in range(1, customers + 1)]

    def _missing_customers(self, User, customers):
        names = self._customer_names(customers)
        have = set(User.objects.filter(username__in=names).values_list("username", flat=True))
        return [name for name in names if name not in have]

    def _load_customers(self, User, banks, customers, missing, password):
        """Customers 1..N and their accounts, whichever are missing; returns (users made, accounts made)."""
        if not customers:
            return 0, 0
        if missing:
            # One hash for every new customer: hashing is deliberately slow (PBKDF2), and thousands of load-test
            # users with one shared password gain nothing from a salt each.
            encoded = make_password(password)
            User.objects.bulk_create(User(username=name, password=encoded) for name in missing)
        users = dict(User.objects.filter(username__in=self._customer_names(customers)).values_list("username", "pk"))
        wanted = [
            (k, bank, number)
            for k in range(1, customers + 1)
            for bank, number in customer_accounts(k)
        ]
        existing = set(
            Account.objects.filter(number__in=[number for _, _, number in wanted]).values_list("number", flat=True)
        )
        new = [
            Account(
                bank=banks[bank], number=number, holder=CUSTOMER_USERNAME.format(k),
                owner_id=users[CUSTOMER_USERNAME.format(k)], balance=CUSTOMER_FUNDS,
            )
            for k, bank, number in wanted
            if number not in existing
        ]
        Account.objects.bulk_create(new, batch_size=1000)
        return len(missing), len(new)

    def _sync_customer_passwords(self, User, customers, password):
        """Customers whose password is not `password` get it (one hash check per distinct stored hash)."""
        rows = User.objects.filter(username__in=self._customer_names(customers))
        stale = [encoded for encoded in set(rows.values_list("password", flat=True))
                 if not check_password(password, encoded)]
        if not stale:
            return 0
        return rows.filter(password__in=stale).update(password=make_password(password))

    @staticmethod
    def _password_matches(User, password):
        return User.objects.get(username=DEMO_USERNAME).check_password(password)
