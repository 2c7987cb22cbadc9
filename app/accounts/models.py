"""Database models: banks, their accounts, and the transfers between accounts."""
from decimal import Decimal

from django.db import models


class Bank(models.Model):
    name = models.CharField(max_length=100, unique=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Account(models.Model):
    bank = models.ForeignKey(Bank, on_delete=models.PROTECT, related_name="accounts")
    owner = models.CharField("owner name", max_length=100)
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
        return f"{self.number} ({self.owner})"


class Transfer(models.Model):
    from_account = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="transfers_out"
    )
    to_account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="transfers_in")
    amount = models.DecimalField(max_digits=12, decimal_places=2)
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
