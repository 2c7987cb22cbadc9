"""Haystack's Xapian backend on a remote xapian-tcpsrv (step 6's search hosts) instead of a folder on this host."""
import time

import xapian
from haystack import connections
from xapian_backend import MEMORY_DB_NAME, XapianEngine, XapianSearchBackend

# A writable server takes one writer at a time (others get DatabaseLockError); a write holds it for milliseconds.
WRITE_LOCK_TRIES = 50
WRITE_LOCK_PAUSE_S = 0.05


class RemoteXapianBackend(XapianSearchBackend):
    """xapian-haystack's backend, its database opened over Xapian's remote protocol (HOST, PORT, TIMEOUT_MS)."""

    def __init__(self, connection_alias, **options):
        # xapian-haystack wants a PATH and makes that folder and a lock file in it; the index lives on the search
        # host and its server does the locking, so nothing is made here (":memory:" skips both; _database is ours).
        super().__init__(connection_alias, **{**options, "PATH": MEMORY_DB_NAME})
        self.host, self.port = options["HOST"], int(options["PORT"])
        self.timeout_ms = int(options.get("TIMEOUT_MS", 2000))

    def _database(self, writable=False):
        if not writable:
            return xapian.remote_open(self.host, self.port, self.timeout_ms, self.timeout_ms)
        for _ in range(WRITE_LOCK_TRIES - 1):
            try:
                return xapian.remote_open_writable(self.host, self.port, self.timeout_ms, self.timeout_ms)
            except xapian.DatabaseLockError:  # another web host is writing
                time.sleep(WRITE_LOCK_PAUSE_S)
        return xapian.remote_open_writable(self.host, self.port, self.timeout_ms, self.timeout_ms)

    def clear(self, models=(), commit=True):
        # xapian-haystack clears "everything" by deleting its folder (here: ":memory:", i.e. nothing); on a remote
        # database "everything" is every indexed model's documents.
        models = models or connections[self.connection_alias].get_unified_index().get_indexed_models()
        super().clear(models, commit)


class RemoteXapianEngine(XapianEngine):
    backend = RemoteXapianBackend
