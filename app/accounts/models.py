"""Database models: banks, their accounts, and the transfers between accounts."""
from decimal import Decimal

from django.conf import settings
from django.db import models


class Bank(models.Model):
    name = models.CharField(max_length=100, unique=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Account(models.Model):
    bank = models.ForeignKey(Bank, on_delete=models.PROTECT, related_name="accounts")
    # The customer who may see this account's balance and move its money; none: no one online (sample accounts
    # held at the branch). PROTECT: a user who still holds money cannot be deleted out from under it.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="accounts"
    )
    # The name on the account. Its column keeps the name it had when this field was called `owner` (migration
    # 0002): code of the previous release, still serving during a rolling deploy, reads it as before.
    holder = models.CharField("holder name", max_length=100, db_column="owner")
    number = models.CharField(max_length=20, unique=True)
    balance = models.DecimalField(max_digits=12, decimal_places=2, default=Decimal("0.00"))

    class Meta:
        ordering = ["number"]
        constraints = [
            # Last line of defence against overdrafts, should application code ever
            # update a balance without going through accounts.banking.
            models.CheckConstraint(
                condition=models.Q(balance__gte=0), name="account_balance_not_negative"
            ),
        ]

    def __str__(self):
        return f"{self.number} ({self.holder})"


class Transfer(models.Model):
    from_account = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="transfers_out"
    )
    to_account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="transfers_in")
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    # Both balances right after the transfer, as its confirmation shows them (empty for transfers made before
    # migration 0002 recorded them).
    from_balance_after = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    to_balance_after = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(amount__gt=0), name="transfer_amount_positive"),
            models.CheckConstraint(
                condition=~models.Q(from_account=models.F("to_account")),
                name="transfer_between_distinct_accounts",
            ),
        ]

    def __str__(self):
        return f"{self.amount} from {self.from_account.number} to {self.to_account.number}"


class Statement(models.Model):
    """A customer's monthly statement: asked for on a page, prepared by a task (a queue worker, or the request itself
    when the lab has no queue host), read later from here."""

    PENDING, READY, FAILED = "pending", "ready", "failed"
    STATUSES = [(PENDING, "being prepared"), (READY, "ready"), (FAILED, "not queued")]

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="statements")
    month = models.DateField(help_text="the first day of the month the statement covers")
    status = models.CharField(max_length=10, choices=STATUSES, default=PENDING)
    requested_at = models.DateTimeField(auto_now_add=True)
    prepared_at = models.DateTimeField(null=True, blank=True)
    # The host whose process prepared it: a q host's worker, or a web host when the task ran in the request.
    prepared_by = models.CharField(max_length=100, blank=True)
    body = models.TextField(blank=True)  # CSV: the month's transfers of each of the owner's accounts, then balances

    class Meta:
        ordering = ["-requested_at", "-id"]

    def __str__(self):
        return f"statement {self.month:%Y-%m} of {self.owner} ({self.status})"


class ApiToken(models.Model):
    """A customer's key to the JSON API (accounts.api): only its SHA-256 is kept, the token itself is shown once when
    made (`manage.py api_token`). A plain hash, not a password hasher: a token is 256 random bits, nothing to guess,
    and every API request looks one up."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=50, help_text="what the customer calls it; a new token of the same name replaces it")
    digest = models.CharField(max_length=64, unique=True, editable=False)  # hex SHA-256 of the token
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["user_id", "name"]
        constraints = [models.UniqueConstraint(fields=["user", "name"], name="api_token_name_unique_per_user")]

    def __str__(self):
        return f"API token {self.name!r} of {self.user}"
