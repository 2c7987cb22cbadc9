"""Money movement: the one place that changes account balances."""
from decimal import Decimal

from django.db import transaction

from accounts.models import Account, Transfer


class TransferError(Exception):
    """A transfer that must not happen (bad amount, same account, missing account)."""


class InsufficientFunds(TransferError):
    """The source account's balance does not cover the amount."""


def transfer_funds(from_account_id, to_account_id, amount, owner=None):
    """Move ``amount`` between two accounts atomically and return the Transfer record.

    With ``owner`` (a user), both accounts must be that user's: checked under the row locks, so the form's own
    check is not the only one standing between a customer and someone else's money. Raises InsufficientFunds
    rather than letting a balance go negative.
    """
    amount = Decimal(amount)
    if amount <= 0:
        raise TransferError("The amount must be positive.")
    if from_account_id == to_account_id:
        raise TransferError("Pick two different accounts.")
    with transaction.atomic():
        # Lock both rows in primary-key order, whatever the direction of the
        # transfer, so two opposite concurrent transfers cannot deadlock.
        locked = {
            account.pk: account
            for account in Account.objects.select_for_update()
            .filter(pk__in=[from_account_id, to_account_id])
            .order_by("pk")
        }
        if len(locked) != 2:
            raise TransferError("Account not found.")
        source, target = locked[from_account_id], locked[to_account_id]
        if owner is not None and not (source.owner_id == target.owner_id == owner.pk):
            # The same words as for a missing account: a refusal must not confirm that someone else's exists.
            raise TransferError("Account not found.")
        # Checked only now, under the lock: a balance read before locking could
        # already be stale when two transfers drain the same account at once.
        if source.balance < amount:
            raise InsufficientFunds(
                f"Insufficient funds: account {source.number} holds {source.balance}, "
                f"cannot transfer {amount}."
            )
        source.balance -= amount
        target.balance += amount
        source.save(update_fields=["balance"])
        target.save(update_fields=["balance"])
        return Transfer.objects.create(
            from_account=source, to_account=target, amount=amount,
            from_balance_after=source.balance, to_balance_after=target.balance,
        )
