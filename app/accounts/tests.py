"""Tests for the bank site: views, middleware, transfers, the settings loader and the sample-data command."""
import json
import socket
import tempfile
from decimal import Decimal
from io import StringIO
from pathlib import Path
from unittest import mock

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.db import OperationalError
from django.test import Client, SimpleTestCase, TestCase, override_settings

from accounts.banking import InsufficientFunds, transfer_funds
from accounts.management.commands.load_sample_data import NUM_ACCOUNTS, sample_accounts
from accounts.models import Account, Bank, Transfer
from accounts.views import BALANCE_CACHE_KEY
from bank import config

# The manifest storage needs collectstatic's staticfiles.json, which a test run
# does not have; the plain storage resolves {% static %} without it.
PLAIN_STATIC = {
    **settings.STORAGES,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}


class BankDataMixin:
    """Two banks with three accounts and a logged-in-able user."""

    password = "correct-horse-battery"

    @classmethod
    def setUpTestData(cls):
        cls.first = Bank.objects.create(name="First Bank")
        cls.second = Bank.objects.create(name="Second Bank")
        cls.empty = Bank.objects.create(name="Empty Bank")
        cls.alice = Account.objects.create(
            bank=cls.first, owner="Alice", number="A1", balance=Decimal("100.00")
        )
        cls.bob = Account.objects.create(
            bank=cls.first, owner="Bob", number="B1", balance=Decimal("50.50")
        )
        cls.carol = Account.objects.create(
            bank=cls.second, owner="Carol", number="C1", balance=Decimal("1000.00")
        )
        cls.user = get_user_model().objects.create_user("teller", password=cls.password)

    def setUp(self):
        cache.clear()


@override_settings(STORAGES=PLAIN_STATIC)
class PageTests(BankDataMixin, TestCase):
    def test_home_lists_banks_with_links_and_css(self):
        response = self.client.get("/")
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "First Bank")
        self.assertContains(response, f'href="/banks/{self.first.pk}/"')
        self.assertContains(response, "/static/accounts/site.css")
        self.assertContains(response, "/static/accounts/logo.svg")

    def test_head_allowed_for_probes(self):
        for url in ["/", "/balance/", "/report/", "/hello/", "/health/"]:
            with self.subTest(url=url):
                self.assertEqual(self.client.head(url).status_code, 200)

    def test_bank_detail(self):
        response = self.client.get(f"/banks/{self.first.pk}/")
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "Alice")
        self.assertNotContains(response, "Carol")
        with self.assertLogs("django.request", "WARNING"):
            self.assertEqual(self.client.get("/banks/99999/").status_code, 404)

    def test_balance_sheet_totals(self):
        response = self.client.get("/balance/")
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "150.50")  # First Bank
        self.assertContains(response, "1000.00")  # Second Bank
        self.assertContains(response, "1150.50")  # all banks
        banks = {row["name"]: row for row in response.context["sheet"]["banks"]}
        self.assertEqual(banks["Empty Bank"]["total"], Decimal("0"))
        self.assertEqual(banks["First Bank"]["num_accounts"], 2)

    def test_balance_sheet_is_cached(self):
        self.client.get("/balance/")
        self.assertIsNotNone(cache.get(BALANCE_CACHE_KEY))
        Account.objects.filter(pk=self.carol.pk).update(balance=Decimal("1.00"))
        # Served from the cache: no query, and the stale total is still shown.
        with self.assertNumQueries(0):
            response = self.client.get("/balance/")
        self.assertContains(response, "1150.50")
        cache.delete(BALANCE_CACHE_KEY)
        response = self.client.get("/balance/")
        self.assertContains(response, "151.50")

    def test_balance_cache_timeout_is_30_seconds(self):
        with mock.patch("accounts.views.cache") as fake_cache:
            fake_cache.get.return_value = None
            self.client.get("/balance/")
        key, _value, timeout = fake_cache.set.call_args.args
        self.assertEqual((key, timeout), ("bank_balance", 30))

    def test_report(self):
        response = self.client.get("/report/")
        self.assertEqual(response.status_code, 200)
        report = response.context["report"]
        self.assertEqual(report["num_accounts"], 3)
        self.assertEqual(report["total"], Decimal("1150.50"))
        self.assertEqual(
            [a.number for a in report["top_accounts"]], ["C1", "A1", "B1"]
        )
        self.assertContains(response, "Top 10 accounts")
        self.assertContains(response, "Carol")

    def test_report_top_accounts_capped_at_ten(self):
        Account.objects.bulk_create(
            Account(bank=self.second, owner=f"X{i}", number=f"X{i:02d}", balance=Decimal(i))
            for i in range(15)
        )
        response = self.client.get("/report/")
        self.assertEqual(len(response.context["report"]["top_accounts"]), 10)

    def test_report_csv(self):
        response = self.client.get("/report/?format=csv")
        self.assertEqual(response.status_code, 200)
        self.assertTrue(response["Content-Type"].startswith("text/csv"))
        lines = response.content.decode().splitlines()
        self.assertEqual(lines[0], "bank,accounts,total,average,largest")
        self.assertIn("First Bank,2,150.50,75.25,100.00", lines)

    def test_hello_has_no_db_access(self):
        with self.assertNumQueries(0):
            response = self.client.get("/hello/")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.content, b"hello")

    def test_health_ok(self):
        response = self.client.get("/health/")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(json.loads(response.content), {"status": "ok", "db": True})
        self.assertIn("no-cache", response["Cache-Control"])

    def test_health_db_down(self):
        broken = mock.MagicMock()
        broken.cursor.side_effect = OperationalError("connection refused")
        with mock.patch("accounts.views.connection", broken), self.assertLogs(
            "accounts.views", "WARNING"
        ), self.assertLogs("django.request", "ERROR"):
            response = self.client.get("/health/")
        self.assertEqual(response.status_code, 503)
        self.assertEqual(json.loads(response.content)["db"], False)

    def test_admin_is_mounted(self):
        response = self.client.get("/admin/")
        self.assertEqual(response.status_code, 302)
        self.assertIn("/admin/login/", response["Location"])

    def test_login_page(self):
        response = self.client.get("/accounts/login/")
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "csrfmiddlewaretoken")
        response = self.client.post(
            "/accounts/login/", {"username": "teller", "password": self.password}
        )
        self.assertEqual(response.status_code, 302)

    def test_logout(self):
        self.client.force_login(self.user)
        response = self.client.post("/accounts/logout/")
        self.assertEqual(response.status_code, 302)
        self.assertEqual(self.client.get("/transfer/").status_code, 302)


@override_settings(STORAGES=PLAIN_STATIC)
class ServedByTests(BankDataMixin, TestCase):
    def test_header_on_every_response(self):
        expected = socket.gethostname()
        self.client.force_login(self.user)
        with self.assertLogs("django.request", "WARNING"):
            for url in ["/", "/balance/", "/report/", "/hello/", "/health/", "/transfer/",
                        "/admin/", "/accounts/login/", "/no-such-page/"]:
                with self.subTest(url=url):
                    self.assertEqual(self.client.get(url)["X-Served-By"], expected)

    def test_header_on_csrf_failure(self):
        client = Client(enforce_csrf_checks=True)
        client.force_login(self.user)
        with self.assertLogs("django.security.csrf", "WARNING"):
            response = client.post("/transfer/", {})
        self.assertEqual(response.status_code, 403)
        self.assertEqual(response["X-Served-By"], socket.gethostname())

    def test_security_headers(self):
        response = self.client.get("/")
        self.assertEqual(response["X-Frame-Options"], "DENY")
        self.assertEqual(response["X-Content-Type-Options"], "nosniff")


@override_settings(STORAGES=PLAIN_STATIC)
class TransferViewTests(BankDataMixin, TestCase):
    def post_transfer(self, client=None, **data):
        return (client or self.client).post("/transfer/", data)

    def test_login_required(self):
        response = self.client.get("/transfer/")
        self.assertRedirects(response, "/accounts/login/?next=/transfer/", fetch_redirect_response=False)
        response = self.post_transfer(from_account="A1", to_account="C1", amount="1.00")
        self.assertEqual(response.status_code, 302)
        self.assertTrue(response["Location"].startswith("/accounts/login/"))
        self.assertFalse(Transfer.objects.exists())

    def test_form_shown(self):
        self.client.force_login(self.user)
        response = self.client.get("/transfer/")
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, 'name="from_account"')
        self.assertContains(response, 'value="A1"')
        self.assertContains(response, "csrfmiddlewaretoken")

    def test_csrf_required(self):
        client = Client(enforce_csrf_checks=True)
        client.force_login(self.user)
        with self.assertLogs("django.security.csrf", "WARNING"):
            response = self.post_transfer(client, from_account="A1", to_account="C1", amount="1")
        self.assertEqual(response.status_code, 403)
        self.assertFalse(Transfer.objects.exists())

    def test_csrf_token_accepted(self):
        client = Client(enforce_csrf_checks=True)
        client.force_login(self.user)
        client.get("/transfer/")
        token = client.cookies[settings.CSRF_COOKIE_NAME].value
        response = client.post(
            "/transfer/",
            {"from_account": "A1", "to_account": "C1", "amount": "1.00",
             "csrfmiddlewaretoken": token},
        )
        self.assertRedirects(response, "/balance/", fetch_redirect_response=False)

    def test_successful_transfer(self):
        self.client.force_login(self.user)
        self.client.get("/balance/")  # prime the cache
        self.assertIsNotNone(cache.get(BALANCE_CACHE_KEY))
        response = self.post_transfer(from_account="A1", to_account="C1", amount="40.25")
        self.assertRedirects(response, "/balance/", fetch_redirect_response=False)
        self.alice.refresh_from_db()
        self.carol.refresh_from_db()
        self.assertEqual(self.alice.balance, Decimal("59.75"))
        self.assertEqual(self.carol.balance, Decimal("1040.25"))
        record = Transfer.objects.get()
        self.assertEqual((record.from_account, record.to_account, record.amount),
                         (self.alice, self.carol, Decimal("40.25")))
        self.assertIsNone(cache.get(BALANCE_CACHE_KEY))
        response = self.client.get("/balance/")
        self.assertContains(response, "Transferred 40.25 from A1 to C1.")
        self.assertContains(response, "110.25")  # First Bank after the transfer

    def test_overdraft_refused(self):
        self.client.force_login(self.user)
        response = self.post_transfer(from_account="B1", to_account="A1", amount="50.51")
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "Insufficient funds")
        self.bob.refresh_from_db()
        self.alice.refresh_from_db()
        self.assertEqual(self.bob.balance, Decimal("50.50"))
        self.assertEqual(self.alice.balance, Decimal("100.00"))
        self.assertFalse(Transfer.objects.exists())

    def test_whole_balance_can_be_moved(self):
        self.client.force_login(self.user)
        response = self.post_transfer(from_account="B1", to_account="A1", amount="50.50")
        self.assertEqual(response.status_code, 302)
        self.bob.refresh_from_db()
        self.assertEqual(self.bob.balance, Decimal("0.00"))

    def test_invalid_input_refused(self):
        self.client.force_login(self.user)
        cases = [
            {"from_account": "A1", "to_account": "A1", "amount": "1"},
            {"from_account": "A1", "to_account": "C1", "amount": "0"},
            {"from_account": "A1", "to_account": "C1", "amount": "-5"},
            {"from_account": "A1", "to_account": "NOPE", "amount": "1"},
            {},
        ]
        for data in cases:
            with self.subTest(data=data):
                response = self.client.post("/transfer/", data)
                self.assertEqual(response.status_code, 200)
                self.assertTrue(response.context["form"].errors)
        self.assertFalse(Transfer.objects.exists())


class BankingTests(BankDataMixin, TestCase):
    def test_transfer_funds(self):
        transfer_funds(self.carol.pk, self.bob.pk, Decimal("0.50"))
        self.carol.refresh_from_db()
        self.bob.refresh_from_db()
        self.assertEqual(self.carol.balance, Decimal("999.50"))
        self.assertEqual(self.bob.balance, Decimal("51.00"))

    def test_overdraft_raises(self):
        with self.assertRaises(InsufficientFunds):
            transfer_funds(self.alice.pk, self.bob.pk, Decimal("100.01"))
        self.alice.refresh_from_db()
        self.assertEqual(self.alice.balance, Decimal("100.00"))

    def test_rows_are_locked(self):
        with mock.patch.object(
            Account.objects, "select_for_update", wraps=Account.objects.select_for_update
        ) as spy:
            transfer_funds(self.alice.pk, self.bob.pk, Decimal("1"))
        spy.assert_called_once()


class ConfigLoaderTests(SimpleTestCase):
    def write(self, text):
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        path = Path(directory.name) / "bank.toml"
        path.write_text(text)
        return path

    def test_production_file(self):
        path = self.write(
            'secret_key = "s3cret-from-file"\n'
            "debug = false\n"
            'allowed_hosts = ["bank.example", "10.0.0.5"]\n'
            'db_name = "bank"\n'
            'db_user = "bank"\n'
            'db_password = "pw"\n'
            'db_host = "db1"\n'
            'csrf_trusted_origins = ["https://bank.example"]\n'
        )
        conf = config.load(path, dev=False)
        self.assertEqual(conf["secret_key"], "s3cret-from-file")
        self.assertIs(conf["debug"], False)
        self.assertEqual(conf["allowed_hosts"], ["bank.example", "10.0.0.5"])
        self.assertEqual(conf["db_engine"], "postgresql")
        self.assertEqual(conf["db_port"], 5432)
        self.assertEqual(conf["static_root"], "/srv/bank/static")
        self.assertEqual(conf["cache"], "locmem")
        self.assertEqual(conf["csrf_trusted_origins"], ["https://bank.example"])
        db = config.databases(conf)["default"]
        self.assertEqual(db["ENGINE"], "django.db.backends.postgresql")
        self.assertEqual((db["NAME"], db["USER"], db["HOST"], db["PORT"]), ("bank", "bank", "db1", "5432"))
        self.assertEqual(db["CONN_MAX_AGE"], 60)
        self.assertEqual(
            config.caches(conf)["default"]["BACKEND"],
            "django.core.cache.backends.locmem.LocMemCache",
        )

    def test_debug_defaults_to_false(self):
        conf = config.load(self.write('secret_key = "k"\ndb_name = "bank"\n'))
        self.assertIs(conf["debug"], False)
        self.assertEqual(conf["allowed_hosts"], [])

    def test_file_wins_over_dev(self):
        conf = config.load(self.write('secret_key = "k"\ndb_name = "bank"\n'), dev=True)
        self.assertIs(conf["debug"], False)
        self.assertEqual(conf["secret_key"], "k")

    def test_missing_file_without_dev_raises(self):
        with self.assertRaisesMessage(ImproperlyConfigured, "does not exist"):
            config.load("/nonexistent/bank.toml", dev=False)

    def test_missing_file_with_dev_gives_dev_defaults(self):
        conf = config.load("/nonexistent/bank.toml", dev=True)
        self.assertIs(conf["debug"], True)
        self.assertEqual(conf["db_engine"], "sqlite")
        self.assertEqual(conf["secret_key"], config.DEV_SECRET_KEY)
        self.assertEqual(
            config.databases(conf)["default"]["ENGINE"], "django.db.backends.sqlite3"
        )

    def test_sqlite_and_memcached(self):
        conf = config.load(self.write(
            'secret_key = "k"\ndb_engine = "sqlite"\ndb_name = "/tmp/x.sqlite3"\n'
            'cache = "memcached"\ncache_location = "127.0.0.1:11211"\n'
        ))
        self.assertEqual(config.databases(conf)["default"]["NAME"], "/tmp/x.sqlite3")
        cache_conf = config.caches(conf)["default"]
        self.assertEqual(
            cache_conf["BACKEND"], "django.core.cache.backends.memcached.PyMemcacheCacheBackend"
        )
        self.assertEqual(cache_conf["LOCATION"], "127.0.0.1:11211")

    def test_bad_files_raise(self):
        cases = {
            "not toml": "secret_key = \n",
            "missing secret": 'db_name = "bank"\n',
            "missing db_name": 'secret_key = "k"\n',
            "empty secret": 'secret_key = ""\ndb_name = "bank"\n',
            "debug as string": 'secret_key = "k"\ndb_name = "bank"\ndebug = "false"\n',
            "port as bool": 'secret_key = "k"\ndb_name = "bank"\ndb_port = true\n',
            "hosts as string": 'secret_key = "k"\ndb_name = "bank"\nallowed_hosts = "a"\n',
            "hosts of ints": 'secret_key = "k"\ndb_name = "bank"\nallowed_hosts = [1]\n',
            "bad engine": 'secret_key = "k"\ndb_name = "bank"\ndb_engine = "mysql"\n',
            "bad cache": 'secret_key = "k"\ndb_name = "bank"\ncache = "redis"\n',
            "memcached without location": 'secret_key = "k"\ndb_name = "bank"\ncache = "memcached"\n',
            "typo": 'secret_key = "k"\ndb_name = "bank"\nallowed_host = ["a"]\n',
        }
        for name, text in cases.items():
            with self.subTest(name), self.assertRaises(ImproperlyConfigured):
                config.load(self.write(text), dev=True)

    def test_active_settings(self):
        self.assertEqual(
            settings.STORAGES["staticfiles"]["BACKEND"],
            "django.contrib.staticfiles.storage.ManifestStaticFilesStorage",
        )
        self.assertEqual(settings.MIDDLEWARE[0], "accounts.middleware.ServedByMiddleware")
        self.assertEqual(settings.DATABASES["default"]["CONN_MAX_AGE"], 60)
        self.assertEqual(settings.STATIC_URL, "/static/")


class LoadSampleDataTests(TestCase):
    def run_command(self, *args):
        out = StringIO()
        call_command("load_sample_data", *args, stdout=out)
        return out.getvalue()

    def snapshot(self):
        return (
            list(Bank.objects.values_list("id", "name")),
            list(Account.objects.values_list("id", "bank_id", "owner", "number", "balance")),
            list(get_user_model().objects.values_list("id", "username", "password")),
        )

    def test_idempotent(self):
        first = self.run_command("--demo-password", "demo-pass-123")
        self.assertIn(f"created 3 banks, {NUM_ACCOUNTS} accounts", first)
        self.assertIn("created user demo", first)
        self.assertEqual(Bank.objects.count(), 3)
        self.assertEqual(Account.objects.count(), NUM_ACCOUNTS)
        self.assertTrue(get_user_model().objects.get(username="demo").check_password("demo-pass-123"))

        before = self.snapshot()
        second = self.run_command("--demo-password", "another-password")
        self.assertIn("sample data already loaded", second)
        self.assertIn("user demo already exists", second)
        self.assertEqual(self.snapshot(), before)
        self.assertTrue(get_user_model().objects.get(username="demo").check_password("demo-pass-123"))

    def test_sync_demo_password_updates_only_a_differing_password(self):
        self.run_command("--demo-password", "demo-pass-123")
        same = self.run_command("--demo-password", "demo-pass-123", "--sync-demo-password")
        self.assertIn("user demo already exists, left unchanged", same)
        changed = self.run_command("--demo-password", "new-pass-456", "--sync-demo-password")
        self.assertIn("updated the password of user demo", changed)
        self.assertTrue(get_user_model().objects.get(username="demo").check_password("new-pass-456"))

    def test_existing_user_needs_no_password(self):
        get_user_model().objects.create_user("demo", password="kept-password-1")
        out = self.run_command()
        self.assertIn(f"created 3 banks, {NUM_ACCOUNTS} accounts", out)
        self.assertTrue(get_user_model().objects.get(username="demo").check_password("kept-password-1"))

    def test_password_required_for_new_user(self):
        with mock.patch.dict("os.environ", {}, clear=False) as env:
            env.pop("BANK_DEMO_PASSWORD", None)
            with self.assertRaisesMessage(CommandError, "--demo-password"):
                self.run_command()
        self.assertFalse(Bank.objects.exists())

    def test_does_not_reset_balances(self):
        self.run_command("--demo-password", "demo-pass-123")
        Account.objects.filter(number="AC00001").update(balance=Decimal("1.23"))
        Account.objects.filter(number="AC00200").delete()
        out = self.run_command()
        self.assertIn("created 0 banks, 1 accounts", out)
        self.assertEqual(Account.objects.get(number="AC00001").balance, Decimal("1.23"))

    def test_deterministic(self):
        self.assertEqual(sample_accounts(), sample_accounts())
        self.assertEqual(len({number for _, number, _, _ in sample_accounts()}), NUM_ACCOUNTS)
