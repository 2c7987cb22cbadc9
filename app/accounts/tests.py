"""Tests for the bank site: views, who may see and move whose money, middleware and HTTPS settings, transfers, the
settings loader, the management commands, the monthly statement (a Celery task) and the JSON API."""
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from io import StringIO
from pathlib import Path
from unittest import mock

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.db import OperationalError, connection
from django.db.migrations.executor import MigrationExecutor
from kombu.exceptions import OperationalError as QueueUnreachable
from django.test import Client, SimpleTestCase, TestCase, TransactionTestCase, override_settings

from accounts.banking import InsufficientFunds, TransferError, transfer_funds
from accounts.management.commands.load_sample_data import (
    CUSTOMER_FUNDS, DEMO_ACCOUNTS, NUM_ACCOUNTS, sample_accounts,
)
from accounts.models import Account, ApiToken, Bank, Statement, Transfer
from accounts import api, tasks, views
from accounts.views import BALANCE_CACHE_KEY, customer_cache_key
from bank import config

# The manifest storage needs collectstatic's staticfiles.json, which a test run
# does not have; the plain storage resolves {% static %} without it.
PLAIN_STATIC = {
    **settings.STORAGES,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}


class BankDataMixin:
    """Three banks; customer A (alice: A1, A2), customer B (bob: B1), an account no one may use online (C1), staff."""

    password = "correct-horse-battery"

    @classmethod
    def setUpTestData(cls):
        User = get_user_model()
        cls.user = User.objects.create_user("alice", password=cls.password)  # customer A
        cls.other = User.objects.create_user("bob", password=cls.password)  # customer B
        cls.staff = User.objects.create_user("teller", password=cls.password, is_staff=True)
        cls.first = Bank.objects.create(name="First Bank")
        cls.second = Bank.objects.create(name="Second Bank")
        cls.empty = Bank.objects.create(name="Empty Bank")
        cls.alice = Account.objects.create(
            bank=cls.first, owner=cls.user, holder="Alice", number="A1", balance=Decimal("100.00")
        )
        cls.alice_savings = Account.objects.create(
            bank=cls.second, owner=cls.user, holder="Alice", number="A2", balance=Decimal("7.25")
        )
        cls.bob = Account.objects.create(
            bank=cls.first, owner=cls.other, holder="Bob", number="B1", balance=Decimal("50.50")
        )
        cls.carol = Account.objects.create(
            bank=cls.second, holder="Carol", number="C1", balance=Decimal("1000.00")
        )

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
        self.assertContains(response, "150.50")  # the bank's total, published
        self.assertNotContains(response, "Alice")  # its accounts: staff only
        self.assertNotContains(response, "100.00")
        self.client.force_login(self.staff)
        response = self.client.get(f"/banks/{self.first.pk}/")
        self.assertContains(response, "Alice")
        self.assertContains(response, "100.00")
        self.assertNotContains(response, "Carol")
        with self.assertLogs("django.request", "WARNING"):
            self.assertEqual(self.client.get("/banks/99999/").status_code, 404)

    def test_balance_sheet_totals(self):
        response = self.client.get("/balance/")
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "150.50")  # First Bank
        self.assertContains(response, "1007.25")  # Second Bank
        self.assertContains(response, "1157.75")  # all banks
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
        self.assertContains(response, "1157.75")
        cache.delete(BALANCE_CACHE_KEY)
        response = self.client.get("/balance/")
        self.assertContains(response, "158.75")

    def test_balance_cache_timeout_is_30_seconds(self):
        with mock.patch("accounts.views.cache") as fake_cache:
            fake_cache.get.return_value = None
            self.client.get("/balance/")
        key, _value, timeout = fake_cache.set.call_args.args
        self.assertEqual((key, timeout), ("bank_balance", 30))

    def test_report_publishes_bank_totals_only(self):
        response = self.client.get("/report/")
        self.assertEqual(response.status_code, 200)
        report = response.context["report"]
        self.assertEqual(report["num_accounts"], 4)
        self.assertEqual(report["total"], Decimal("1157.75"))
        self.assertIsNone(report["top_accounts"])
        self.assertContains(response, "1007.25")
        for private in ("Top 10 accounts", "Carol", "Alice", "1000.00", "100.00", "Average", "Largest"):
            self.assertNotContains(response, private)

    def test_report_for_staff(self):
        self.client.force_login(self.staff)
        response = self.client.get("/report/")
        self.assertEqual(
            [a.number for a in response.context["report"]["top_accounts"]], ["C1", "A1", "B1", "A2"]
        )
        self.assertContains(response, "Top 10 accounts")
        self.assertContains(response, "Carol")

    def test_report_top_accounts_capped_at_ten(self):
        Account.objects.bulk_create(
            Account(bank=self.second, holder=f"X{i}", number=f"X{i:02d}", balance=Decimal(i))
            for i in range(15)
        )
        self.client.force_login(self.staff)
        response = self.client.get("/report/")
        self.assertEqual(len(response.context["report"]["top_accounts"]), 10)

    def test_report_csv_publishes_bank_totals_only(self):
        response = self.client.get("/report/?format=csv")
        self.assertEqual(response.status_code, 200)
        self.assertTrue(response["Content-Type"].startswith("text/csv"))
        lines = response.content.decode().splitlines()
        self.assertEqual(lines, ["bank,accounts,total", "Empty Bank,0,0.00", "First Bank,2,150.50",
                                 "Second Bank,2,1007.25"])

    def test_report_csv_for_staff(self):
        self.client.force_login(self.staff)
        lines = self.client.get("/report/?format=csv").content.decode().splitlines()
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


OPTION = re.compile(r'<option value="([^"]+)"')


@override_settings(STORAGES=PLAIN_STATIC)
class TransferViewTests(BankDataMixin, TestCase):
    def post_transfer(self, client=None, **data):
        return (client or self.client).post("/transfer/", data)

    def test_login_required(self):
        response = self.client.get("/transfer/")
        self.assertRedirects(response, "/accounts/login/?next=/transfer/", fetch_redirect_response=False)
        response = self.post_transfer(from_account="A1", to_account="A2", amount="1.00")
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
            response = self.post_transfer(client, from_account="A1", to_account="A2", amount="1")
        self.assertEqual(response.status_code, 403)
        self.assertFalse(Transfer.objects.exists())

    def test_csrf_token_accepted(self):
        client = Client(enforce_csrf_checks=True)
        client.force_login(self.user)
        client.get("/transfer/")
        token = client.cookies[settings.CSRF_COOKIE_NAME].value
        response = client.post(
            "/transfer/",
            {"from_account": "A1", "to_account": "A2", "amount": "1.00",
             "csrfmiddlewaretoken": token},
        )
        self.assertRedirects(response, f"/transfer/{Transfer.objects.get().pk}/", fetch_redirect_response=False)

    def test_successful_transfer_ends_on_its_confirmation(self):
        self.client.force_login(self.user)
        self.client.get("/balance/")  # prime both caches
        self.assertIsNotNone(cache.get(BALANCE_CACHE_KEY))
        self.assertIsNotNone(cache.get(customer_cache_key(self.user)))
        response = self.post_transfer(from_account="A1", to_account="A2", amount="40.25")
        record = Transfer.objects.get()
        self.assertRedirects(response, f"/transfer/{record.pk}/", fetch_redirect_response=False)
        self.alice.refresh_from_db()
        self.alice_savings.refresh_from_db()
        self.assertEqual(self.alice.balance, Decimal("59.75"))
        self.assertEqual(self.alice_savings.balance, Decimal("47.50"))
        self.assertEqual((record.from_account, record.to_account, record.amount),
                         (self.alice, self.alice_savings, Decimal("40.25")))
        self.assertEqual((record.from_balance_after, record.to_balance_after), (Decimal("59.75"), Decimal("47.50")))
        # This process dropped its cached copies: its next /balance/ is fresh.
        self.assertIsNone(cache.get(BALANCE_CACHE_KEY))
        self.assertIsNone(cache.get(customer_cache_key(self.user)))
        response = self.client.get(response["Location"])
        self.assertContains(response, "Transferred 40.25 from A1 to A2.")
        self.assertContains(
            response,
            f'id="transfer-confirmation" data-transfer-id="{record.pk}" data-from="A1" data-from-balance="59.75" '
            'data-to="A2" data-to-balance="47.50"',
            count=1,
        )
        response = self.client.get("/balance/")
        self.assertContains(response, 'data-account="A1" data-balance="59.75"')
        self.assertContains(response, 'data-account="A2" data-balance="47.50"')

    def test_confirmation_is_read_from_the_database(self):
        self.client.force_login(self.user)
        response = self.post_transfer(from_account="A1", to_account="A2", amount="1.00")
        with mock.patch("accounts.views.cache") as no_cache:
            response = self.client.get(response["Location"])
        self.assertEqual(no_cache.mock_calls, [])
        self.assertContains(response, 'data-from-balance="99.00"')

    def test_overdraft_refused(self):
        self.client.force_login(self.user)
        response = self.post_transfer(from_account="A2", to_account="A1", amount="7.26")
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "Insufficient funds")
        self.alice.refresh_from_db()
        self.alice_savings.refresh_from_db()
        self.assertEqual(self.alice_savings.balance, Decimal("7.25"))
        self.assertEqual(self.alice.balance, Decimal("100.00"))
        self.assertFalse(Transfer.objects.exists())

    def test_whole_balance_can_be_moved(self):
        self.client.force_login(self.user)
        response = self.post_transfer(from_account="A2", to_account="A1", amount="7.25")
        self.assertEqual(response.status_code, 302)
        self.alice_savings.refresh_from_db()
        self.assertEqual(self.alice_savings.balance, Decimal("0.00"))

    def test_invalid_input_refused(self):
        self.client.force_login(self.user)
        cases = [
            {"from_account": "A1", "to_account": "A1", "amount": "1"},
            {"from_account": "A1", "to_account": "A2", "amount": "0"},
            {"from_account": "A1", "to_account": "A2", "amount": "-5"},
            {"from_account": "A1", "to_account": "NOPE", "amount": "1"},
            {},
        ]
        for data in cases:
            with self.subTest(data=data):
                response = self.client.post("/transfer/", data)
                self.assertEqual(response.status_code, 200)
                self.assertTrue(response.context["form"].errors)
        self.assertFalse(Transfer.objects.exists())


@override_settings(STORAGES=PLAIN_STATIC)
class OwnershipTests(BankDataMixin, TestCase):
    """Customer A can neither see nor move customer B's money, whatever A sends."""

    def balances(self):
        return dict(Account.objects.values_list("number", "balance"))

    def test_form_offers_only_own_accounts(self):
        self.client.force_login(self.user)
        page = self.client.get("/transfer/").content.decode()
        self.assertEqual(OPTION.findall(page), ["A1", "A2", "A1", "A2"])  # From, then To
        self.client.force_login(self.other)
        page = self.client.get("/transfer/").content.decode()
        self.assertEqual(OPTION.findall(page), ["B1", "B1"])

    def test_forged_post_from_anothers_account_is_refused(self):
        before = self.balances()
        self.client.force_login(self.user)
        for forged in ({"from_account": "B1", "to_account": "A1"},  # B's money into A's account
                       {"from_account": "C1", "to_account": "A2"},  # an account no one may use online
                       {"from_account": "A1", "to_account": "B1"}):  # A's money into B's: not a move of A's own
            with self.subTest(**forged):
                response = self.client.post("/transfer/", {**forged, "amount": "10.00"})
                self.assertEqual(response.status_code, 200)
                self.assertIn("Select a valid choice", str(response.context["form"].errors))
        self.assertEqual(self.balances(), before)
        self.assertFalse(Transfer.objects.exists())

    def test_banking_refuses_another_owners_accounts(self):
        before = self.balances()
        cases = [(self.bob, self.alice, self.user),  # from B's account, asked by A
                 (self.alice, self.bob, self.user),  # into B's account, asked by A
                 (self.alice, self.alice_savings, self.other)]  # A's two accounts, asked by B
        for source, target, asker in cases:
            with self.subTest(source=source.number, target=target.number, asker=asker.username):
                with self.assertRaisesMessage(TransferError, "Account not found."):
                    transfer_funds(source.pk, target.pk, Decimal("1.00"), owner=asker)
        self.assertEqual(self.balances(), before)
        self.assertFalse(Transfer.objects.exists())

    def test_confirmation_only_for_the_customer_who_made_it(self):
        record = transfer_funds(self.alice.pk, self.alice_savings.pk, Decimal("1.00"), owner=self.user)
        self.client.force_login(self.other)
        with self.assertLogs("django.request", "WARNING"):
            self.assertEqual(self.client.get(f"/transfer/{record.pk}/").status_code, 404)
        self.client.logout()
        self.assertEqual(self.client.get(f"/transfer/{record.pk}/").status_code, 302)  # to the login page
        self.client.force_login(self.user)
        self.assertEqual(self.client.get(f"/transfer/{record.pk}/").status_code, 200)

    def test_balance_shows_each_customer_only_their_own_accounts(self):
        self.client.force_login(self.user)
        page = self.client.get("/balance/").content.decode()
        self.assertEqual(re.findall(r'data-account="([^"]+)" data-balance="([^"]+)"', page),
                         [("A1", "100.00"), ("A2", "7.25")])
        self.client.force_login(self.other)
        page = self.client.get("/balance/").content.decode()
        self.assertEqual(re.findall(r'data-account="([^"]+)" data-balance="([^"]+)"', page), [("B1", "50.50")])
        self.client.logout()
        self.assertNotContains(self.client.get("/balance/"), 'id="your-accounts"')

    def test_own_accounts_are_cached_per_customer(self):
        self.client.force_login(self.user)
        self.client.get("/balance/")
        Account.objects.filter(pk=self.alice.pk).update(balance=Decimal("1.00"))
        # Another process's copy stays stale until its timeout: only the confirming process deletes its own.
        self.assertContains(self.client.get("/balance/"), 'data-account="A1" data-balance="100.00"')
        cache.delete(customer_cache_key(self.user))
        self.assertContains(self.client.get("/balance/"), 'data-account="A1" data-balance="1.00"')

    def test_own_accounts_cache_timeout_is_30_seconds(self):
        self.client.force_login(self.user)
        with mock.patch("accounts.views.cache") as fake_cache:
            fake_cache.get.return_value = None
            self.client.get("/balance/")
        timeouts = {call.args[0]: call.args[2] for call in fake_cache.set.call_args_list}
        self.assertEqual(timeouts, {"bank_balance": 30, customer_cache_key(self.user): 30})

    def test_no_page_shows_one_customers_balance_to_another(self):
        self.client.force_login(self.other)  # customer B looks everywhere for A's accounts
        pages = ["/", f"/banks/{self.first.pk}/", f"/banks/{self.second.pk}/", "/balance/", "/report/",
                 "/report/?format=csv", "/transfer/"]
        for url in pages:
            with self.subTest(url=url):
                response = self.client.get(url)
                self.assertEqual(response.status_code, 200)
                body = response.content.decode()
                for secret in ("100.00", "7.25"):  # A's balances, as numbers of their own (not inside 1007.25)
                    self.assertNotRegex(body, rf"(?<![\d.]){re.escape(secret)}(?!\d)")
                for secret in ("Alice", '"A1"', '"A2"', ">A1<", ">A2<"):
                    self.assertNotIn(secret, body)


@override_settings(
    STORAGES=PLAIN_STATIC, BANK_TRUSTED_PROXIES=["10.0.0.11"],
    SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"), SECURE_SSL_REDIRECT=True,
    SECURE_REDIRECT_EXEMPT=[r"^health/$"], SECURE_HSTS_SECONDS=31536000,
    SESSION_COOKIE_SECURE=True, CSRF_COOKIE_SECURE=True,
)
class BehindTheBalancerTests(BankDataMixin, TestCase):
    """The HTTPS settings of a deployed site: X-Forwarded-Proto believed from the balancer only."""

    def get(self, path, remote, proto=None):
        extra = {"REMOTE_ADDR": remote}
        if proto:
            extra["HTTP_X_FORWARDED_PROTO"] = proto
        return self.client.get(path, **extra)

    def test_https_through_the_balancer(self):
        response = self.get("/", "10.0.0.11", "https")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response["Strict-Transport-Security"], "max-age=31536000")

    def test_plain_http_is_redirected(self):
        response = self.get("/report/", "10.0.0.11", "http")
        self.assertEqual((response.status_code, response["Location"]), (301, "https://testserver/report/"))

    def test_forwarded_proto_from_anyone_else_is_not_believed(self):
        response = self.get("/", "10.0.0.99", "https")
        self.assertEqual((response.status_code, response["Location"]), (301, "https://testserver/"))

    def test_health_answers_plain_probes(self):
        self.assertEqual(self.get("/health/", "10.0.0.21").status_code, 200)

    def test_cookies_are_secure(self):
        response = self.client.get("/accounts/login/", REMOTE_ADDR="10.0.0.11", HTTP_X_FORWARDED_PROTO="https")
        self.assertTrue(response.cookies[settings.CSRF_COOKIE_NAME]["secure"])
        response = self.client.post(
            "/accounts/login/", {"username": "alice", "password": self.password},
            REMOTE_ADDR="10.0.0.11", HTTP_X_FORWARDED_PROTO="https",
        )
        self.assertEqual(response.status_code, 302)
        self.assertTrue(response.cookies[settings.SESSION_COOKIE_NAME]["secure"])


class DeployCheckTests(SimpleTestCase):
    """`manage.py check --deploy` of a deployed host's settings (a config file, no BANK_DEV) warns of nothing."""

    def test_production_settings_pass_check_deploy(self):
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        path = Path(directory.name) / "bank.toml"
        path.write_text(
            f'secret_key = "{secrets.token_urlsafe(48)}"\nallowed_hosts = ["lb1"]\ndb_engine = "sqlite"\n'
            f'db_name = "{directory.name}/db.sqlite3"\ntrusted_proxies = ["10.0.0.11"]\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BANK_", "DJANGO_"))}
        env["BANK_CONFIG"] = str(path)
        result = subprocess.run(
            [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
            cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=120,
        )
        self.assertEqual(result.returncode, 0, result.stderr + result.stdout)
        self.assertIn("no issues", result.stdout)


class BankingTests(BankDataMixin, TestCase):
    def test_transfer_funds(self):
        transfer_funds(self.carol.pk, self.bob.pk, Decimal("0.50"))
        self.carol.refresh_from_db()
        self.bob.refresh_from_db()
        self.assertEqual(self.carol.balance, Decimal("999.50"))
        self.assertEqual(self.bob.balance, Decimal("51.00"))

    def test_transfer_funds_of_an_owner(self):
        record = transfer_funds(self.alice.pk, self.alice_savings.pk, Decimal("0.75"), owner=self.user)
        self.assertEqual((record.from_balance_after, record.to_balance_after), (Decimal("99.25"), Decimal("8.00")))

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


@override_settings(STORAGES=PLAIN_STATIC)
class SharedNothingTests(BankDataMixin, TestCase):
    """The slides' anti-patterns, on only for `lab demo shared-nothing`, and the site's own way without them."""

    def tearDown(self):
        views.BALANCE = None

    def test_the_sheet_states_its_age_and_the_cache_bounds_it(self):
        response = self.client.get("/balance/")
        age = float(re.search(r'id="sheet-age" data-age="([0-9.]+)" data-cache-seconds="30"', response.content.decode()).group(1))
        self.assertLess(age, 5)

    @override_settings(BANK_ANTIPATTERNS=frozenset({"global_balance"}))
    def test_the_global_balance_is_computed_once_and_never_again(self):
        self.assertContains(self.client.get("/balance/"), "1157.75")
        Account.objects.filter(pk=self.carol.pk).update(balance=Decimal("1.00"))
        cache.clear()  # no cache, no timeout reaches a module global
        self.assertContains(self.client.get("/balance/"), "1157.75")
        self.assertIsNone(cache.get(BALANCE_CACHE_KEY))

    def test_a_generated_report_is_rebuilt_wherever_its_view_lands(self):
        self.client.force_login(self.user)
        response = self.client.post("/report/generate/", {"name": "q3"})
        self.assertRedirects(response, "/report/view/?name=q3", fetch_redirect_response=False)
        with mock.patch("accounts.views.open", side_effect=AssertionError("no file between requests")):
            report = self.client.get(response["Location"])
        self.assertEqual(report["X-Report-Name"], "q3")
        self.assertEqual(report.content.decode().splitlines()[:2], ["bank,accounts,total", "Empty Bank,0,0.00"])

    @override_settings(BANK_ANTIPATTERNS=frozenset({"tmp_report"}))
    def test_the_tmp_report_is_only_where_it_was_written(self):
        self.client.force_login(self.user)
        with tempfile.TemporaryDirectory() as folder, mock.patch("accounts.views.TMP_REPORT", f"{folder}/report.txt"):
            response = self.client.post("/report/generate/", {"name": "q3"})
            self.assertRedirects(response, "/report/view/", fetch_redirect_response=False)
            self.assertEqual(self.client.get("/report/view/")["X-Report-Name"], "q3")
            os.remove(f"{folder}/report.txt")  # another web host: no such file there
            with self.assertLogs("django.request", "WARNING"):
                self.assertEqual(self.client.get("/report/view/").status_code, 404)

    def test_generating_a_report_needs_a_signed_in_user(self):
        self.assertEqual(self.client.post("/report/generate/", {"name": "q3"}).status_code, 302)
        self.assertEqual(self.client.get("/report/generate/").status_code, 302)

    def test_unknown_antipatterns_are_refused_by_the_settings_loader(self):
        with self.assertRaisesRegex(ImproperlyConfigured, "'antipatterns' may hold global_balance, tmp_report"):
            config.validate({"secret_key": "k", "db_name": "bank", "antipatterns": ["globals"]})


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
            cache_conf["BACKEND"], "django.core.cache.backends.memcached.PyMemcacheCache"
        )
        self.assertEqual(cache_conf["LOCATION"], "127.0.0.1:11211")

    def test_a_silent_memcached_host_costs_a_request_one_timeout_not_a_hang(self):
        """A cache host that accepts connections and never answers (a paused or wedged memcached) fails a cache call
        after the configured timeout; pymemcache's default waits for ever and would hold every request."""
        from django.core.cache.backends.memcached import PyMemcacheCache

        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel accepts; nobody reads or answers
        self.addCleanup(silent.close)
        conf = config.load(self.write(
            'secret_key = "k"\ndb_name = "bank"\ncache = "memcached"\n'
            f'cache_location = ["127.0.0.1:{silent.getsockname()[1]}"]\n'
        ))
        cache_conf = config.caches(conf)["default"]
        client = PyMemcacheCache(cache_conf["LOCATION"], {"OPTIONS": cache_conf["OPTIONS"]})
        self.addCleanup(client.close)
        started = time.monotonic()
        with self.assertRaises(OSError):  # socket.timeout is an OSError
            client.get("balance-sheet")
        self.assertLess(time.monotonic() - started, config.CACHE_TIMEOUT_S + 1.0)

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
            list(Account.objects.values_list("id", "bank_id", "owner", "holder", "number", "balance")),
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

    def test_demo_user_owns_its_two_accounts(self):
        self.run_command("--demo-password", "demo-pass-123")
        demo = get_user_model().objects.get(username="demo")
        self.assertEqual(sorted(demo.accounts.values_list("number", flat=True)), list(DEMO_ACCOUNTS))
        self.assertEqual(Account.objects.filter(owner__isnull=False).count(), 2)

    def test_customers(self):
        out = self.run_command("--demo-password", "demo-pass-123", "--customers", "3")
        self.assertIn("customers: created 3 users and 6 accounts (3 wanted)", out)
        User = get_user_model()
        for k in (1, 2, 3):
            user = User.objects.get(username=f"customer{k:04d}")
            self.assertTrue(user.check_password("demo-pass-123"))
            accounts = list(user.accounts.order_by("number"))
            self.assertEqual([a.number for a in accounts], [f"CU{k:04d}-1", f"CU{k:04d}-2"])
            self.assertEqual({a.balance for a in accounts}, {CUSTOMER_FUNDS})
            self.assertNotEqual(accounts[0].bank, accounts[1].bank)
        before = self.snapshot()
        again = self.run_command("--customers", "3")
        self.assertIn("customers: 3 already loaded", again)
        self.assertEqual(self.snapshot(), before)
        more = self.run_command("--demo-password", "demo-pass-123", "--customers", "5")
        self.assertIn("created 2 users and 4 accounts (5 wanted)", more)
        self.assertFalse(User.objects.filter(username="customer0006").exists())

    def test_customer_passwords_follow_a_new_demo_password(self):
        self.run_command("--demo-password", "demo-pass-123", "--customers", "2")
        out = self.run_command("--demo-password", "new-pass-456", "--customers", "2", "--sync-demo-password")
        self.assertIn("updated the password of 2 customers", out)
        self.assertTrue(get_user_model().objects.get(username="customer0002").check_password("new-pass-456"))

    @override_settings(BANK_SEARCH_ALIASES=["default"])
    def test_accounts_made_in_bulk_reach_the_search_index(self):
        """bulk_create sends no post_save: the bench's customers were never indexed until the next `lab up`."""
        from accounts.management.commands import load_sample_data

        with mock.patch.object(load_sample_data, "call_command") as catch_up:
            self.run_command("--demo-password", "demo-pass-123", "--customers", "2")
            self.assertEqual([c.args for c in catch_up.call_args_list], [("search_catch_up",)])
            self.run_command("--demo-password", "demo-pass-123", "--customers", "2")  # nothing new: nothing to index
            self.assertEqual(catch_up.call_count, 1)
            catch_up.side_effect = OSError("no route to search1")
            out = self.run_command("--demo-password", "demo-pass-123", "--customers", "3")
        self.assertIn("search index not updated (OSError: no route to search1)", out)
        self.assertTrue(get_user_model().objects.filter(username="customer0003").exists())  # made either way

    def test_no_search_server_no_catch_up(self):
        from accounts.management.commands import load_sample_data

        with mock.patch.object(load_sample_data, "call_command") as catch_up:
            self.run_command("--demo-password", "demo-pass-123", "--customers", "2")
        catch_up.assert_not_called()

    def test_customers_out_of_range_refused(self):
        for bad in ("-1", "10000"):
            with self.subTest(bad), self.assertRaisesMessage(CommandError, "--customers"):
                self.run_command("--demo-password", "demo-pass-123", "--customers", bad)
        self.assertFalse(Bank.objects.exists())


class BankTotalTests(TestCase):
    def test_one_line_of_json(self):
        bank = Bank.objects.create(name="B")
        Account.objects.create(bank=bank, holder="x", number="X1", balance=Decimal("10.50"))
        Account.objects.create(bank=bank, holder="y", number="Y1", balance=Decimal("0.25"))
        transfer_funds(Account.objects.get(number="X1").pk, Account.objects.get(number="Y1").pk, Decimal("1"))
        out = StringIO()
        call_command("bank_total", stdout=out)
        self.assertEqual(out.getvalue().count("\n"), 1)
        self.assertEqual(json.loads(out.getvalue()), {"total": "10.75", "accounts": 2, "transfers": 1})

    def test_empty_bank(self):
        out = StringIO()
        call_command("bank_total", stdout=out)
        self.assertEqual(json.loads(out.getvalue()), {"total": "0.00", "accounts": 0, "transfers": 0})


class OwnershipMigrationTests(TransactionTestCase):
    """Migration 0002 on a database loaded by the previous release: names kept, the demo user owns its accounts."""

    before, after = [("accounts", "0001_initial")], [("accounts", "0002_account_owner_user")]

    def migrate(self, target):
        executor = MigrationExecutor(connection)
        executor.migrate(target)
        return executor.loader.project_state(target).apps

    def test_existing_sample_data_keeps_working(self):
        old = self.migrate(self.before)
        self.addCleanup(self.migrate, self.after)
        get_user_model().objects.create(username="demo", password="!")  # auth is not migrated back
        bank = old.get_model("accounts", "Bank").objects.create(name="First Bank of Lawrence")
        OldAccount = old.get_model("accounts", "Account")
        for number, name in (("AC00001", "Ada Adams"), ("AC00002", "Boris Barros"), ("AC00003", "Chidi Chen")):
            OldAccount.objects.create(bank=bank, owner=name, number=number, balance=Decimal("5.00"))
        new = self.migrate(self.after)
        Account = new.get_model("accounts", "Account")
        rows = {a.number: (a.holder, a.owner.username if a.owner else None) for a in Account.objects.all()}
        self.assertEqual(rows, {"AC00001": ("Ada Adams", "demo"), "AC00002": ("Boris Barros", "demo"),
                                "AC00003": ("Chidi Chen", None)})


@override_settings(STORAGES=PLAIN_STATIC)
class SearchPageTests(BankDataMixin, TestCase):
    """The search page with no search server (the database), and through Haystack with one (faked here; step 6's
    checks and tests/test_integration_full.py use a real xapian-tcpsrv)."""

    def test_login_required(self):
        response = self.client.get("/search/?q=Alice")
        self.assertEqual(response.status_code, 302)
        self.assertIn("/accounts/login/", response["Location"])

    def test_a_customer_finds_only_their_own_accounts(self):
        self.client.force_login(self.user)
        response = self.client.get("/search/?q=Alice")
        self.assertEqual([a.number for a in response.context["accounts"]], ["A1", "A2"])
        self.assertEqual(response.context["source"], "database")
        self.assertEqual(self.client.get("/search/?q=Bob").context["accounts"], [])
        self.assertEqual(self.client.get("/search/?q=C1").context["accounts"], [])
        self.assertNotContains(self.client.get("/search/?q=Alice"), "100.00")  # no balances for customers here

    def test_staff_find_any_account_by_holder_number_or_bank(self):
        self.client.force_login(self.staff)
        self.assertEqual([a.number for a in self.client.get("/search/?q=carol").context["accounts"]], ["C1"])
        self.assertEqual([a.number for a in self.client.get("/search/?q=B1").context["accounts"]], ["B1"])
        found = self.client.get("/search/?q=second bank").context["accounts"]
        self.assertEqual([a.number for a in found], ["A2", "C1"])

    def test_an_empty_query_searches_nothing(self):
        self.client.force_login(self.staff)
        response = self.client.get("/search/?q=+")
        self.assertEqual(response.status_code, 200)
        self.assertIsNone(response.context["source"])

    @override_settings(BANK_SEARCH_ALIASES=["default"])
    def test_the_database_has_the_last_word_on_what_a_customer_sees_of_the_index(self):
        from accounts import search

        hits = [mock.Mock(pk=str(pk)) for pk in (self.bob.pk, self.alice.pk)]  # an index that also returns Bob's
        fake = mock.MagicMock()
        fake.return_value.models.return_value.auto_query.return_value.filter.return_value.__getitem__.return_value = hits
        with mock.patch.object(search, "SearchQuerySet", fake):
            accounts, source = search.find_accounts(self.user, "anything")
        self.assertEqual((accounts, source), ([self.alice], "default"))
        fake.return_value.models.return_value.auto_query.return_value.filter.assert_called_once_with(
            owner__exact=f"u{self.user.pk}")

    @override_settings(BANK_SEARCH_ALIASES=["default", "search2"])
    def test_a_failing_search_server_falls_back_to_the_next_then_the_database(self):
        from accounts import search

        with mock.patch.object(search, "SearchQuerySet", side_effect=OSError("no route")) as fake, \
                self.assertLogs("accounts.search", "WARNING") as logs:
            accounts, source = search.find_accounts(self.staff, "Alice")
        self.assertEqual(([a.number for a in accounts], source), (["A1", "A2"], "database"))
        self.assertEqual([c.kwargs["using"] for c in fake.call_args_list], ["default", "search2"])
        self.assertEqual(len(logs.records), 2)


class SearchIndexUpdateTests(BankDataMixin, TestCase):
    """accounts.search.AccountSignalProcessor: an account reaches every search server's index once its change commits;
    a transfer's balance-only saves do not; a failing server is logged, not the request's failure."""

    def setUp(self):
        import haystack

        from accounts.search_indexes import AccountIndex

        super().setUp()
        self.update = mock.patch.object(AccountIndex, "update_object").start()
        self.remove = mock.patch.object(AccountIndex, "remove_object").start()
        # A second connection (the simple backend: the index methods above are what the test watches).
        mock.patch.dict(haystack.connections.connections_info, {"search2": {"ENGINE": config.SIMPLE_ENGINE}}).start()
        self.addCleanup(mock.patch.stopall)

    @override_settings(BANK_SEARCH_ALIASES=["default", "search2"])
    def test_a_new_account_is_indexed_on_every_server_after_commit(self):
        with self.captureOnCommitCallbacks(execute=True) as callbacks:
            account = Account.objects.create(bank=self.first, holder="Dora", number="D1")
            self.update.assert_not_called()  # not before the commit: a rollback must not reach the index
        self.assertEqual(len(callbacks), 1)
        self.assertEqual([(c.args[0], c.kwargs["using"]) for c in self.update.call_args_list],
                         [(account, "default"), (account, "search2")])
        with self.captureOnCommitCallbacks(execute=True):
            account.delete()
        self.assertEqual([c.kwargs["using"] for c in self.remove.call_args_list], ["default", "search2"])

    @override_settings(BANK_SEARCH_ALIASES=["default"])
    def test_a_transfer_does_not_touch_the_index(self):
        with self.captureOnCommitCallbacks(execute=True) as callbacks:
            transfer_funds(self.alice.pk, self.alice_savings.pk, "1.00")
        self.assertEqual(callbacks, [])
        self.update.assert_not_called()

    @override_settings(BANK_SEARCH_ALIASES=["default", "search2"])
    def test_a_failing_server_is_logged_and_the_next_still_gets_the_account(self):
        self.update.side_effect = [OSError("search1 down"), None]
        with self.assertLogs("accounts.search", "WARNING") as logs, self.captureOnCommitCallbacks(execute=True):
            Account.objects.create(bank=self.first, holder="Eve", number="E1")
        self.assertEqual(self.update.call_count, 2)
        self.assertIn("not indexed on search server default", logs.output[0])

    def test_without_a_search_server_nothing_is_sent(self):
        with self.captureOnCommitCallbacks(execute=True) as callbacks:
            Account.objects.create(bank=self.first, holder="Finn", number="F1")
        self.assertEqual(callbacks, [])
        self.update.assert_not_called()


class SearchSettingsTests(SimpleTestCase):
    def test_search_servers_become_haystack_connections(self):
        conf = config.validate({"secret_key": "k", "db_name": "d", "search_servers": ["10.0.0.81:33333", "10.0.0.82:33333"]})
        connections = config.haystack_connections(conf)
        self.assertEqual(list(connections), ["default", "search2"])
        self.assertEqual((connections["search2"]["HOST"], connections["search2"]["PORT"]), ("10.0.0.82", 33333))
        self.assertEqual(connections["default"]["ENGINE"], config.SEARCH_ENGINE)

    def test_no_search_server_is_haystacks_simple_backend(self):
        conf = config.validate({"secret_key": "k", "db_name": "d"})
        self.assertEqual(config.haystack_connections(conf), {"default": {"ENGINE": config.SIMPLE_ENGINE}})

    def test_a_search_server_without_a_port_is_refused(self):
        for wrong in ["10.0.0.81", "10.0.0.81:http", ":33333", "10.0.0.81:0"]:
            with self.subTest(wrong=wrong), self.assertRaisesMessage(ImproperlyConfigured, "search_servers"):
                config.validate({"secret_key": "k", "db_name": "d", "search_servers": [wrong]})


@override_settings(STORAGES=PLAIN_STATIC)
class StatementTests(BankDataMixin, TestCase):
    """The monthly statement, prepared by a task: in the request when the site has no queue (Celery's always-eager,
    the settings here), or later by a queue worker (the queue faked: the page must say "being prepared" until then)."""

    def setUp(self):
        super().setUp()
        self.moved = transfer_funds(self.alice.pk, self.alice_savings.pk, Decimal("12.50"), owner=self.user)
        Transfer.objects.create(from_account=self.bob, to_account=self.carol, amount=Decimal("1.00"))  # not alice's

    def ask_for_statement(self):
        self.client.force_login(self.user)
        response = self.client.post("/statements/")
        self.assertEqual(response.status_code, 302)
        return Statement.objects.get(pk=int(response["Location"].rstrip("/").rsplit("/", 1)[1]))

    def test_without_a_queue_the_request_prepares_the_statement(self):
        self.assertTrue(settings.CELERY_TASK_ALWAYS_EAGER)  # no queue_host: always-eager
        statement = self.ask_for_statement()
        page = self.client.get(f"/statements/{statement.pk}/")
        self.assertContains(page, 'data-status="ready"')
        self.assertContains(page, f'data-prepared-by="{socket.gethostname()}"')
        self.assertNotContains(page, 'http-equiv="refresh"')
        csv_text = self.client.get(f"/statements/{statement.pk}/?format=csv").content.decode()
        lines = csv_text.splitlines()
        self.assertEqual(lines[0], "date,account,counterpart,amount,balance_after")
        self.assertIn(",A1,A2,-12.50,87.50", csv_text)
        self.assertIn(",A2,A1,12.50,19.75", csv_text)
        self.assertNotIn("B1", csv_text)
        self.assertTrue(lines[-1].endswith(",A2,balance,,19.75"))

    def test_with_a_queue_the_page_says_being_prepared_until_a_worker_has_prepared_it(self):
        with mock.patch.object(tasks.prepare_statement, "delay") as enqueue:
            statement = self.ask_for_statement()
        enqueue.assert_called_once_with(statement.pk)
        page = self.client.get(f"/statements/{statement.pk}/")
        self.assertContains(page, 'data-status="pending"')
        self.assertContains(page, "being prepared")
        self.assertContains(page, 'http-equiv="refresh"')
        self.assertEqual(self.client.get(f"/statements/{statement.pk}/?format=csv")["Content-Type"],
                         "text/html; charset=utf-8")  # nothing to download yet: the page again
        tasks.prepare_statement(statement.pk)  # what the worker runs, as it runs it
        page = self.client.get(f"/statements/{statement.pk}/")
        self.assertContains(page, 'data-status="ready"')
        self.assertContains(page, "-12.50")

    def test_an_unreachable_queue_marks_the_statement_failed_and_the_page_says_so(self):
        with mock.patch.object(tasks.prepare_statement, "delay", side_effect=QueueUnreachable("refused")):
            with self.assertLogs("accounts.tasks", "WARNING"):
                statement = self.ask_for_statement()
        page = self.client.get(f"/statements/{statement.pk}/")
        self.assertContains(page, 'data-status="failed"')
        self.assertContains(page, "could not be queued")

    def test_a_task_delivered_twice_prepares_the_statement_once(self):
        with mock.patch.object(tasks.prepare_statement, "delay"):
            statement = self.ask_for_statement()
        tasks.prepare_statement(statement.pk)
        first = Statement.objects.get(pk=statement.pk)
        tasks.prepare_statement(statement.pk)
        again = Statement.objects.get(pk=statement.pk)
        self.assertEqual((again.status, again.prepared_at, again.body), (Statement.READY, first.prepared_at, first.body))

    def test_only_the_owner_sees_a_statement(self):
        statement = self.ask_for_statement()
        self.client.force_login(self.other)
        self.assertEqual(self.client.get(f"/statements/{statement.pk}/").status_code, 404)
        self.assertNotContains(self.client.get("/statements/"), f'data-statement="{statement.pk}"')
        self.client.logout()
        self.assertEqual(self.client.get("/statements/").status_code, 302)  # to the login page

    def test_the_round_trip_command_waits_for_the_statement(self):
        out = StringIO()
        call_command("statement_round_trip", "--user", "alice", stdout=out)
        result = json.loads(out.getvalue())
        self.assertEqual((result["status"], result["prepared_by"]), ("ready", socket.gethostname()))
        with self.assertRaises(CommandError):
            call_command("statement_round_trip", "--user", "nobody", stdout=StringIO())


class QueueSettingsTests(SimpleTestCase):
    base = {"secret_key": "x", "db_name": "bank"}

    def test_no_queue_host_runs_tasks_in_the_request(self):
        celery = config.celery_settings(config.validate(dict(self.base)))
        self.assertTrue(celery["CELERY_TASK_ALWAYS_EAGER"])

    def test_a_queue_host_gives_redis_with_the_password_quoted_and_short_timeouts(self):
        conf = config.validate({**self.base, "queue_host": "192.0.2.61", "queue_password": "p@ss/word"})
        celery = config.celery_settings(conf)
        self.assertFalse(celery["CELERY_TASK_ALWAYS_EAGER"])
        self.assertEqual(celery["CELERY_BROKER_URL"], "redis://:p%40ss%2Fword@192.0.2.61:6379/0")
        self.assertEqual(celery["CELERY_BROKER_TRANSPORT_OPTIONS"]["socket_connect_timeout"], config.QUEUE_TIMEOUT_S)

    def test_a_queue_port_out_of_range_is_refused(self):
        with self.assertRaises(ImproperlyConfigured):
            config.validate({**self.base, "queue_host": "q1", "queue_port": 70000})


class ApiTests(BankDataMixin, TestCase):
    """The JSON API: bearer tokens stored hashed, 401 without one, a customer's own accounts and transfers only, and a
    transfer through the same form and banking code as the web page (money conserved)."""

    def setUp(self):
        super().setUp()
        self.token = api.issue_token(self.user, "laptop")
        self.client = Client(enforce_csrf_checks=True)  # the API needs no CSRF token: a bearer token is no cookie

    def call(self, method, path, token=None, body=None, **headers):
        if token is not False:
            headers["HTTP_AUTHORIZATION"] = f"Bearer {token or self.token}"
        kwargs = {"data": json.dumps(body) if not isinstance(body, str) else body,
                  "content_type": "application/json"} if body is not None else {}
        return getattr(self.client, method)(path, **kwargs, **headers)

    def total(self):
        return sum(Account.objects.values_list("balance", flat=True), Decimal("0"))

    def test_the_token_is_stored_as_its_hash_only(self):
        stored = ApiToken.objects.get(user=self.user, name="laptop")
        self.assertTrue(self.token.startswith(api.TOKEN_PREFIX))
        self.assertEqual(stored.digest, api.token_digest(self.token))
        self.assertNotIn(self.token, json.dumps(list(ApiToken.objects.values()), default=str), "the token itself is never stored")

    def test_a_new_token_of_the_same_name_replaces_the_old(self):
        newer = api.issue_token(self.user, "laptop")
        self.assertEqual(self.call("get", "/api/accounts/").status_code, 401)
        self.assertEqual(self.call("get", "/api/accounts/", token=newer).status_code, 200)
        self.assertEqual(ApiToken.objects.filter(user=self.user).count(), 1)

    def test_missing_wrong_or_malformed_token_is_401_json(self):
        for token, header in ((False, {}), ("bank_not-a-real-token", {}), (False, {"HTTP_AUTHORIZATION": "Basic eA=="}),
                              (False, {"HTTP_AUTHORIZATION": f"Token {self.token}"})):
            with self.subTest(token=token, header=header):
                response = self.call("get", "/api/accounts/", token=token, **header)
                self.assertEqual(response.status_code, 401)
                self.assertEqual(response["Content-Type"], "application/json")
                self.assertIn("error", response.json())
                self.assertEqual(response["WWW-Authenticate"], 'Bearer realm="bank"')

    def test_an_inactive_users_token_is_refused(self):
        self.user.is_active = False
        self.user.save()
        self.assertEqual(self.call("get", "/api/accounts/").status_code, 401)

    def test_accounts_lists_the_customers_own_only(self):
        response = self.call("get", "/api/accounts/")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json(), {"accounts": [
            {"number": "A1", "bank": "First Bank", "balance": "100.00"},
            {"number": "A2", "bank": "Second Bank", "balance": "7.25"},
        ]})
        self.assertEqual(response["Cache-Control"], "max-age=0, no-cache, no-store, must-revalidate, private")

    def test_a_transfer_moves_money_and_conserves_it(self):
        before = self.total()
        views.get_balance_sheet(), views.get_customer_accounts(self.user)  # the web pages' cached figures: dropped too
        self.assertIsNotNone(cache.get(customer_cache_key(self.user)))
        response = self.call("post", "/api/transfers/", body={"from_account": "A1", "to_account": "A2", "amount": "40.25"})
        self.assertEqual(response.status_code, 201, response.content)
        made = response.json()
        self.assertEqual((made["from_account"], made["to_account"], made["amount"]), ("A1", "A2", "40.25"))
        self.assertEqual((made["from_balance_after"], made["to_balance_after"]), ("59.75", "47.50"))
        self.assertEqual(self.total(), before)
        self.assertIsNone(cache.get(customer_cache_key(self.user)))
        self.assertIsNone(cache.get(BALANCE_CACHE_KEY))
        listed = self.call("get", "/api/transfers/").json()["transfers"]
        self.assertEqual([t["id"] for t in listed], [made["id"]])
        self.assertEqual(self.call("get", f"/api/transfers/{made['id']}/").json(), made)

    def test_a_number_amount_is_taken_as_json_gives_it(self):
        response = self.call("post", "/api/transfers/", body={"from_account": "A1", "to_account": "A2", "amount": 1.5})
        self.assertEqual(response.status_code, 201, response.content)
        self.assertEqual(response.json()["amount"], "1.50")

    def test_someone_elses_account_is_refused_and_nothing_moves(self):
        before = self.total()
        for target in ("B1", "C1", "NOPE"):
            with self.subTest(target=target):
                response = self.call("post", "/api/transfers/", body={"from_account": "A1", "to_account": target, "amount": "1"})
                self.assertEqual(response.status_code, 400)
                self.assertIn("to_account", response.json()["fields"])
        response = self.call("post", "/api/transfers/", body={"from_account": "B1", "to_account": "A1", "amount": "1"})
        self.assertEqual(response.status_code, 400)
        self.assertFalse(Transfer.objects.exists())
        self.assertEqual(self.total(), before)

    def test_bad_bodies_and_amounts_are_400(self):
        for body in ("not json", "[1, 2]", {"from_account": "A1", "to_account": "A1", "amount": "1"},
                     {"from_account": "A1", "to_account": "A2", "amount": "-1"},
                     {"from_account": "A1", "to_account": "A2", "amount": "0.001"},
                     {"from_account": "A1", "to_account": "A2"}):
            with self.subTest(body=body):
                response = self.call("post", "/api/transfers/", body=body)
                self.assertEqual(response.status_code, 400, response.content)
                self.assertIn("error", response.json())
        self.assertFalse(Transfer.objects.exists())

    def test_an_oversized_body_is_413(self):
        response = self.call("post", "/api/transfers/", body={"from_account": "A1", "to_account": "A2", "amount": "1",
                                                              "padding": "x" * api.MAX_BODY_BYTES})
        self.assertEqual(response.status_code, 413)

    def test_insufficient_funds_is_409_and_nothing_moves(self):
        response = self.call("post", "/api/transfers/", body={"from_account": "A2", "to_account": "A1", "amount": "7.26"})
        self.assertEqual(response.status_code, 409)
        self.assertIn("Insufficient funds", response.json()["error"])
        self.alice_savings.refresh_from_db()
        self.assertEqual(self.alice_savings.balance, Decimal("7.25"))

    def test_another_customers_transfer_is_404(self):
        bob_token = api.issue_token(self.other, "phone")
        mine = self.call("post", "/api/transfers/", body={"from_account": "A1", "to_account": "A2", "amount": "1"}).json()
        response = self.call("get", f"/api/transfers/{mine['id']}/", token=bob_token)
        self.assertEqual(response.status_code, 404)
        self.assertEqual(self.call("get", "/api/transfers/", token=bob_token).json(), {"transfers": []})

    def test_other_methods_are_405_with_allow(self):
        response = self.call("delete", "/api/transfers/")
        self.assertEqual(response.status_code, 405)
        self.assertEqual(response["Allow"], "GET, POST")
        self.assertEqual(self.call("post", "/api/accounts/", body={}).status_code, 405)

    def test_the_web_form_and_the_api_share_one_transfer_path(self):
        with mock.patch("accounts.views.transfer_funds", wraps=views.transfer_funds) as banking:
            self.call("post", "/api/transfers/", body={"from_account": "A1", "to_account": "A2", "amount": "1"})
            browser = Client()
            browser.force_login(self.user)
            browser.post("/transfer/", {"from_account": "A1", "to_account": "A2", "amount": "1"})
        self.assertEqual(banking.call_count, 2)
        self.assertEqual(banking.call_args.kwargs["owner"], self.user)


class ApiTokenCommandTests(BankDataMixin, TestCase):
    def test_makes_prints_once_and_revokes(self):
        out = StringIO()
        call_command("api_token", "alice", "bob", "--name", "ci", stdout=out)
        lines = dict(line.split(" ", 1) for line in out.getvalue().splitlines())
        self.assertEqual(set(lines), {"alice", "bob"})
        self.assertEqual(self.client.get("/api/accounts/", HTTP_AUTHORIZATION=f"Bearer {lines['alice']}").status_code, 200)
        self.assertEqual(ApiToken.objects.filter(name="ci").count(), 2)
        out = StringIO()
        call_command("api_token", "alice", "--name", "ci", "--revoke", stdout=out)
        self.assertIn("revoked 1 token", out.getvalue())
        self.assertEqual(self.client.get("/api/accounts/", HTTP_AUTHORIZATION=f"Bearer {lines['alice']}").status_code, 401)

    def test_customers_by_count(self):
        get_user_model().objects.create_user("customer0001")
        out = StringIO()
        call_command("api_token", "--customers", "1", "--name", "bench", stdout=out)
        self.assertEqual(out.getvalue().split()[0], "customer0001")

    def test_unknown_users_and_nothing_asked_are_refused(self):
        with self.assertRaisesMessage(CommandError, "no such user: mallory"):
            call_command("api_token", "mallory", stdout=StringIO())
        with self.assertRaisesMessage(CommandError, "at least one USER"):
            call_command("api_token", stdout=StringIO())
        self.assertFalse(ApiToken.objects.exists())
