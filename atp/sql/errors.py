"""What the databases' errors mean: a busy database (a lock wait gave up) or something else.

Vendor knowledge in one place: PostgreSQL's SQLSTATE codes and SQLite's messages. Used by
the daemon (``atp.daemon.db.classify``) and by ``retry_when_busy``, which ATP's own writes
from inside handlers use so that a lock timeout never costs a task an attempt.
"""

import functools
import random
import time

from django.db import OperationalError, connection

#: SQLSTATEs of a wait that gave up while the server is fine: lock_not_available
#: (``lock_timeout``), deadlock_detected, serialization_failure, query_canceled
#: (``statement_timeout``). Retrying later is right; nothing was used up.
BUSY_STATES = frozenset({"55P03", "40P01", "40001", "57014"})
#: SQLite's words for the same (its lock wait, ``timeout``, ran out; or, outside
#: IMMEDIATE transactions, a read lock could not be upgraded to a write lock).
SQLITE_BUSY = ("database is locked", "database table is locked")
#: Longest ``retry_when_busy`` keeps retrying one write, in seconds.
BUSY_RETRY_DEADLINE = 60.0


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE code of a database error (psycopg2 or psycopg 3), if it has one."""
    error: BaseException | None = exc
    for _ in range(5):  # Django's wrapper, then the driver's error
        if error is None:
            return None
        code = getattr(error, "pgcode", None) or getattr(error, "sqlstate", None)
        if code:
            return code
        error = error.__cause__
    return None


def is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` says the database was too busy (a lock wait gave up), not broken."""
    if sqlstate(exc) in BUSY_STATES:
        return True
    return isinstance(exc, OperationalError) and any(words in str(exc) for words in SQLITE_BUSY)


def retry_when_busy(write):
    """Decorate a write that runs in a transaction of its own: retry it while the database
    is busy, with growing pauses, for up to ``BUSY_RETRY_DEADLINE`` seconds.

    Retrying is safe because the failed transaction was rolled back whole. Inside an outer
    transaction (the caller's ``atomic`` block) nothing is retried: that transaction is
    broken and only its owner can start it again.
    """

    @functools.wraps(write)
    def patient(*args, **kwargs):
        deadline = time.monotonic() + BUSY_RETRY_DEADLINE
        pause = 0.01
        while True:
            try:
                return write(*args, **kwargs)
            except OperationalError as exc:
                if connection.in_atomic_block or not is_busy(exc):
                    raise
                if time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause * (0.5 + random.random()))  # noqa: S311 - jitter, not secrets
            pause = min(1.0, pause * 2)

    return patient
