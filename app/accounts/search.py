"""The search page's finding: accounts by holder, number or bank through Haystack (each search server in turn), or
the database when there is none or none answers; and the index kept current as accounts change."""
import logging

from django.conf import settings
from django.db import models, transaction
from django.db.models import Q

from haystack.exceptions import NotHandled
from haystack.query import SearchQuerySet
from haystack.signals import BaseSignalProcessor

from accounts.models import Account
from accounts.search_indexes import owner_term

logger = logging.getLogger(__name__)

MAX_RESULTS = 50
MAX_QUERY_LENGTH = 100
# Fields a save may change without touching the index (it holds no balance): a transfer's saves skip the search servers.
UNINDEXED_FIELDS = frozenset({"balance"})
DATABASE = "database"


class EverySearchServerRouter:
    """Haystack writes every change to every search server (each holds the whole index); reads go to the first."""

    def for_write(self, **hints):
        return settings.BANK_SEARCH_ALIASES or ["default"]

    def for_read(self, **hints):
        return "default"


def visible_accounts(user):
    """The accounts a user may find: a customer their own, staff every account (as bank_detail shows them)."""
    accounts = Account.objects.select_related("bank")
    return accounts if user.is_staff else accounts.filter(owner=user)


def find_accounts(user, query):
    """(accounts matching the query that the user may see, where they were found: a search alias or "database")."""
    query = query.strip()[:MAX_QUERY_LENGTH]
    visible = visible_accounts(user)
    for alias in settings.BANK_SEARCH_ALIASES:
        try:
            found = SearchQuerySet(using=alias).models(Account).auto_query(query)
            if not user.is_staff:
                found = found.filter(owner__exact=owner_term(user.pk))
            pks = [int(result.pk) for result in found[:MAX_RESULTS]]
        except Exception:  # a search server down, slow or firewalled: the next one, then the database
            logger.warning("search on %s failed; trying the next", alias, exc_info=True)
            continue
        # The database has the last word on who may see what: the index only says which accounts match.
        by_pk = visible.in_bulk(pks)
        return [by_pk[pk] for pk in pks if pk in by_pk], alias
    return list(visible.filter(database_match(query)).order_by("number")[:MAX_RESULTS]), DATABASE


def database_match(query):
    """Every word of the query in the holder's name, the number or the bank's name (case-insensitive)."""
    match = Q()
    for word in query.split():
        match &= Q(holder__icontains=word) | Q(number__icontains=word) | Q(bank__name__icontains=word)
    return match


class AccountSignalProcessor(BaseSignalProcessor):
    """Each account into every search server's index once its change commits (a rolled-back change never reaches
    the index); a search server that fails is logged, never the request's failure (`manage.py search_catch_up`
    brings its index back)."""

    def setup(self):
        models.signals.post_save.connect(self.account_saved, sender=Account)
        models.signals.post_delete.connect(self.account_deleted, sender=Account)

    def teardown(self):
        models.signals.post_save.disconnect(self.account_saved, sender=Account)
        models.signals.post_delete.disconnect(self.account_deleted, sender=Account)

    def account_saved(self, sender, instance, update_fields=None, **kwargs):
        if not settings.BANK_SEARCH_ALIASES or (update_fields and set(update_fields) <= UNINDEXED_FIELDS):
            return
        transaction.on_commit(lambda: self._on_every_server("update_object", sender, instance))

    def account_deleted(self, sender, instance, **kwargs):
        if settings.BANK_SEARCH_ALIASES:
            transaction.on_commit(lambda: self._on_every_server("remove_object", sender, instance))

    def _on_every_server(self, action, sender, instance):
        for alias in self.connection_router.for_write(instance=instance):
            try:
                index = self.connections[alias].get_unified_index().get_index(sender)
                getattr(index, action)(instance, using=alias)
            except NotHandled:
                pass
            except Exception:
                logger.warning("account %s not %s on search server %s", instance.pk,
                               "indexed" if action == "update_object" else "removed", alias, exc_info=True)
