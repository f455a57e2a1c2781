"""The few statements ATP needs beyond the ORM, one function per vendor-specific idea."""

import json
import time

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


# --- row-count estimates (the admin's lists on big tables) ------------------------------


def estimated_table_rows(table: str) -> int | None:
    """PostgreSQL's estimate of a table's row count (``pg_class.reltuples``), no scan.

    None when unknown: not PostgreSQL, or the table was never vacuumed/analysed (-1).
    """
    if not is_postgresql():
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [table])
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] >= 0 else None


def planned_rows(queryset) -> int | None:
    """The planner's row estimate for a queryset (``EXPLAIN``), without running it."""
    if not is_postgresql():
        return None
    query, params = queryset.order_by().query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (FORMAT JSON) " + query, params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):  # psycopg2 parses json columns; another driver may not
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


def column_frequencies(table: str, column: str) -> dict[int, float]:
    """PostgreSQL's most-common-value frequencies of an integer column (``pg_stats``).

    For a low-cardinality column (a status, a foreign key to a few types) these cover
    every value; empty when not PostgreSQL or never analysed.
    """
    if not is_postgresql():
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT most_common_vals::text::bigint[], most_common_freqs FROM pg_stats "
            "WHERE schemaname = current_schema() AND tablename = %s AND attname = %s",
            [table, column],
        )
        row = cursor.fetchone()
    if not row or row[0] is None:
        return {}
    return dict(zip(row[0], row[1], strict=True))


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
