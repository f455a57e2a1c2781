"""PostgreSQL's locks as ATP uses them: transaction-scoped advisory locks that make a
check-then-act atomic (queue limits, unique keys, rate limits), and the wait for the other
writers of a table (``settled_id``). SQLite serialises its writers and needs none of it.
"""

import hashlib
import time

from django.db import connection

from atp.sql.vendor import is_postgresql

#: First key of ATP's PostgreSQL advisory locks ("ATP" in ASCII), so they cannot collide
#: with the application's own advisory locks on the same database.
ADVISORY_LOCK_CLASS = 0x415450

#: First key of the advisory lock that serialises rate-limited claims.
RATE_LIMIT_LOCK_CLASS = ADVISORY_LOCK_CLASS + 1
#: Longest a claim waits for that lock before it counts the rate-limited types as full.
RATE_LIMIT_LOCK_WAIT = 0.5

#: First key of the advisory locks of unique keys (one per task type and unique_key).
UNIQUE_LOCK_CLASS = ADVISORY_LOCK_CLASS + 2


def lock_queue_scope(scope_id: int) -> None:
    """Serialise queue-limit checks of one scope until the current transaction ends.

    Counting waiting tasks and inserting one is a check-then-act race under READ COMMITTED:
    two enqueuers could both see room for one more. A transaction-scoped advisory lock per
    scope (a type with its own limit, or 0 for the shared queue) makes the pair atomic
    without locking any table row. SQLite needs nothing: its writers are already serialised.
    """
    if is_postgresql():
        _run_all(enqueue_lock_statements(scope_id, None))


def enqueue_lock_statements(scope_id: int | None, unique_keys) -> list[str]:
    """The advisory lock statements an enqueue takes, in the order every enqueuer takes them.

    ``unique_keys`` (``(type id, keys)`` or None) first, then the queue-limit scope
    ``scope_id`` (None: no limit). Plain SQL with integer literals only, so the caller may
    send them ahead of its own statement in one round trip (``atp.sql.enqueue``).
    """
    statements = []
    if unique_keys is not None:
        type_id, keys = unique_keys
        statements += [
            f"SELECT pg_advisory_xact_lock({UNIQUE_LOCK_CLASS}, {int(lock_id)})"
            for lock_id in unique_lock_ids(type_id, keys)
        ]
    if scope_id is not None:
        statements.append(f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK_CLASS}, {int(scope_id)})")
    return statements


def _run_all(statements) -> None:
    with connection.cursor() as cursor:
        for statement in statements:  # one statement per execute (see atp.sql.enqueue)
            cursor.execute(statement)


def unique_lock_ids(type_id: int, keys) -> list[int]:
    """The second keys of the advisory locks of ``keys`` of a type: sorted, no repeats.

    A stable 32-bit hash of (type, key): every process computes the same lock for a key.
    Two keys that happen to share a hash only wait for each other, never mix up. Sorted, so
    enqueuers that lock several keys always take them in the same order (no deadlock).
    """
    ids = set()
    for key in keys:
        digest = hashlib.sha1(f"{type_id}:{key}".encode()).digest()  # noqa: S324 (a hash)
        ids.add(int.from_bytes(digest[:4], "big", signed=True))
    return sorted(ids)


def lock_unique_keys(type_id: int, keys) -> None:
    """Serialise enqueues of the same unique keys of a type until the transaction ends.

    Checking whether a key is held and inserting its task is a check-then-act race under
    READ COMMITTED; with the lock held, the check (a later statement) sees every task that
    another enqueuer of the key committed. SQLite needs nothing: its writers are serialised.
    """
    if is_postgresql() and keys:
        _run_all(enqueue_lock_statements(None, (type_id, keys)))


def lock_rate_limits() -> bool:
    """Serialise rate-limited claims across daemons until the current transaction ends.

    Counting a type's recent claims and claiming one more must not interleave, or two
    daemons would both see room for the same last slot. One lock for all rate-limited
    types (taken only by claims that meet one) cannot deadlock, and costs little: a
    rate-limited type is by definition claimed rarely. The lock is re-entrant within the
    transaction. SQLite needs nothing: its write transactions are already serialised.

    Waits at most ``RATE_LIMIT_LOCK_WAIT`` seconds, then returns False, and the caller
    counts the rate-limited types as full for now: a daemon frozen inside its claim (which
    holds the lock until the server ends its session) must not stop every other daemon's
    claims with it. A live holder keeps it for milliseconds.
    """
    if not is_postgresql():
        return True
    deadline = time.monotonic() + RATE_LIMIT_LOCK_WAIT
    with connection.cursor() as cursor:
        while True:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s, 0)", [RATE_LIMIT_LOCK_CLASS])
            if cursor.fetchone()[0]:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)


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
