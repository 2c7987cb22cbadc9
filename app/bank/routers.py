"""Send the read-only report's reads to the hot standby ("replica" database), when the site has one; all else primary."""
import contextvars

from django.conf import settings

REPLICA = "replica"
# Read-only pages whose every query may be a little behind the primary (asynchronous replication): the report.
REPLICA_PATHS = ("/report/",)
_reading_from_replica = contextvars.ContextVar("reading_from_replica", default=False)


class ReplicaReadsMiddleware:
    """Marks a GET of a read-only page for the router; a per-request context variable, so threads never mix."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.method != "GET" or request.path not in REPLICA_PATHS or REPLICA not in settings.DATABASES:
            return self.get_response(request)
        token = _reading_from_replica.set(True)
        try:
            return self.get_response(request)
        finally:
            _reading_from_replica.reset(token)


class ReplicaRouter:
    """Reads of a marked request from the replica; writes, migrations and everything else on the primary."""

    def db_for_read(self, model, **hints):
        # The bank's own rows only: a session or user read from a standby a moment behind could sign a customer out.
        return REPLICA if _reading_from_replica.get() and model._meta.app_label == "accounts" else None

    def db_for_write(self, model, **hints):
        return "default"

    def allow_relation(self, obj1, obj2, **hints):
        return True  # one database, two servers: the rows are the same

    def allow_migrate(self, db, app_label, **hints):
        return db == "default"
