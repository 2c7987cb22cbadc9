"""Haystack's index of accounts: what the search page finds an account by (never its balance)."""
from haystack import indexes

from accounts.models import Account


class AccountIndex(indexes.SearchIndex, indexes.Indexable):
    text = indexes.CharField(document=True)
    number = indexes.CharField(model_attr="number")
    # Who may see the account (accounts.search filters a customer's search by it): "u<id>", or "nobody".
    owner = indexes.CharField()

    def get_model(self):
        return Account

    def prepare_text(self, account):
        return f"{account.holder} {account.number} {account.bank.name}"

    def prepare_owner(self, account):
        return owner_term(account.owner_id)

    def index_queryset(self, using=None):
        return Account.objects.select_related("bank")


def owner_term(user_id):
    return f"u{user_id}" if user_id else "nobody"
