"""The few statements ATP needs beyond the ORM, one function per vendor-specific idea."""

import time

from django.db import connection

#: First key of ATP's PostgreSQL advisory locks ("ATP" in ASCII), so they cannot collide
#: with the application's own advisory locks on the same database.
ADVISORY_LOCK_CLASS = 0x415450

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


def settled_id(table: str, wait: float = 2.0) -> int | None:
    """The highest id of ``table`` below which no row can still appear; None if unsure.

    On PostgreSQL ids are handed out before commit, so a transaction still open may yet
    commit a row *below* the newest visible id; a relay that moved its cursor past it would
    never publish it. Any such transaction holds ROW EXCLUSIVE on the table now, so: read
    the newest id, then wait (up to ``wait`` seconds) for every other transaction writing
    the table to end. ATP's transactions are short, so the wait is milliseconds. SQLite
    serialises writers and hands out growing ids at commit order: the newest id is settled.
    """
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}")  # noqa: S608 (model table name)
        newest = cursor.fetchone()[0]
        if not is_postgresql():
            return newest
        cursor.execute(
            "SELECT t.transactionid::text FROM pg_locks r JOIN pg_locks t ON t.pid = r.pid"
            " AND t.locktype = 'transactionid' AND t.mode = 'ExclusiveLock' AND t.granted"
            " WHERE r.relation = %s::regclass AND r.mode = 'RowExclusiveLock'"
            " AND r.pid <> pg_backend_pid()",
            [table],
        )
        writers = [row[0] for row in cursor.fetchall()]
        deadline = time.monotonic() + wait
        while writers:
            if time.monotonic() > deadline:
                return None
            time.sleep(0.005)
            cursor.execute(
                "SELECT transactionid::text FROM pg_locks WHERE locktype = 'transactionid'"
                " AND mode = 'ExclusiveLock' AND granted AND transactionid::text = ANY(%s)",
                [writers],
            )
            writers = [row[0] for row in cursor.fetchall()]
    return newest
