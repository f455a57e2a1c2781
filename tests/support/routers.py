"""Database routers of the read-replica tests (tests/integration/test_read_replica.py).

``ReadsOutsideTransactions`` is the router README "Capacity" recommends: reads of ATP's
models go to the replica alias unless "default" is inside a transaction, so the tracker,
which reads what it decides on inside its transactions, always reads the primary.
``AllReads`` sends every read of ATP's models to the replica: what not to do.
"""

from django.db import DEFAULT_DB_ALIAS, connections

REPLICA = "replica"


class ReadsOutsideTransactions:
    """Reads of ATP's models outside a transaction of "default" go to the replica."""

    def db_for_read(self, model, **hints):
        """The replica, for ATP's models while "default" is not in a transaction."""
        if model._meta.app_label == "atp" and not connections[DEFAULT_DB_ALIAS].in_atomic_block:
            return REPLICA
        return None

    def db_for_write(self, model, **hints):
        """Writes go to "default" (Django's choice when a router says nothing)."""
        return None

    def allow_relation(self, obj1, obj2, **hints):
        """A row read on the replica may be linked to one of "default": the same data."""
        return True

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        """Only "default" is migrated; the replica follows it."""
        return db == DEFAULT_DB_ALIAS


class AllReads(ReadsOutsideTransactions):
    """Every read of ATP's models goes to the replica, in transactions too (wrong)."""

    def db_for_read(self, model, **hints):
        """The replica, for ATP's models, always."""
        return REPLICA if model._meta.app_label == "atp" else None
