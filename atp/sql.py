"""The few statements ATP needs beyond the ORM, one function per vendor-specific idea."""

from django.db import connection

#: First key of ATP's PostgreSQL advisory locks ("ATP" in ASCII), so they cannot collide
#: with the application's own advisory locks on the same database.
ADVISORY_LOCK_CLASS = 0x415450

#: First key of the advisory lock that serialises rate-limited claims.
RATE_LIMIT_LOCK_CLASS = ADVISORY_LOCK_CLASS + 1

#: The channel on which enqueues notify idle daemons (PostgreSQL LISTEN/NOTIFY).
NOTIFY_CHANNEL = "atp_enqueued"


def is_postgresql() -> bool:
    """Whether the default database is PostgreSQL."""
    return connection.vendor == "postgresql"


def lock_queue_scope(scope_id: int) -> None:
    """Serialise queue-limit checks of one scope until the current transaction ends.

    Counting waiting tasks and inserting one is a check-then-act race under READ COMMITTED:
    two enqueuers could both see room for one more. A transaction-scoped advisory lock per
    scope (a type with its own limit, or 0 for the shared queue) makes the pair atomic
    without locking any table row. SQLite needs nothing: its writers are already serialised.
    """
    if is_postgresql():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [ADVISORY_LOCK_CLASS, scope_id])


def notify_enqueued(queue: str) -> None:
    """Wake daemons listening for new tasks; PostgreSQL delivers it when the transaction commits."""
    if is_postgresql():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [NOTIFY_CHANNEL, queue])


def lock_rate_limits() -> None:
    """Serialise rate-limited claims across daemons until the current transaction ends.

    Counting a type's recent claims and claiming one more must not interleave, or two
    daemons would both see room for the same last slot. One lock for all rate-limited
    types (taken only by claims that meet one) cannot deadlock, and costs little: a
    rate-limited type is by definition claimed rarely. The lock is re-entrant within the
    transaction. SQLite needs nothing: its write transactions are already serialised.
    """
    if is_postgresql():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, 0)", [RATE_LIMIT_LOCK_CLASS])
