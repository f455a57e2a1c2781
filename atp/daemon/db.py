"""Database-connection policy of long-running ATP processes (daemon and pool children).

Also the one place that tells what a database error means for the daemon (``classify``):
an *outage* (the server or the line went away: reconnect with backoff), a *busy* database
(a lock wait gave up: retry the step soon, it used up nothing), or an *error* (a bad value
or a bug: contain it to the task or type that caused it; retrying would fail again).
"""

from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    connections,
)

from atp.sql import driver
from atp.sql.errors import is_busy

#: Errors that mean "the database is unreachable right now", as opposed to a bad query.
CONNECTION_ERRORS = (OperationalError, InterfaceError)
#: Seconds a daemon's statement waits for a lock another process holds (PostgreSQL
#: ``lock_timeout``): a peer frozen while it holds a row lock costs the others at most this.
LOCK_TIMEOUT = 2.0
#: Seconds a daemon's statement may run (``statement_timeout``); its statements take
#: milliseconds, so this only ends a statement stuck on something unforeseen.
STATEMENT_TIMEOUT = 120.0


def classify(exc: BaseException) -> str:
    """What an exception raised by a daemon's database step means: "outage", "busy", "error".

    - "busy": a lock or statement timeout, a deadlock, SQLite's "database is locked". The
      database answers; the step retries after a short pause and counts against nothing.
    - "outage": the connection is lost (``OperationalError``/``InterfaceError``, or any
      database error after which the connection no longer answers).
    - "error": anything else (``DataError``, ``IntegrityError``, ``ProgrammingError``,
      ``ValueError``…): retrying the same step would fail the same way, so the daemon
      contains it to the task or type that caused it.
    """
    if is_busy(exc):
        return "busy"
    if isinstance(exc, CONNECTION_ERRORS):
        return "outage"
    if isinstance(exc, DatabaseError) and not _answers():
        return "outage"
    return "error"


def _answers() -> bool:
    connection = connections["default"]
    try:
        return connection.connection is None or connection.is_usable()
    except Exception:  # noqa: BLE001 - any failure to ask means it does not answer
        return False


def limit_daemon_sessions(idle_in_transaction: float) -> None:
    """Give every transaction of this thread's PostgreSQL connections the daemon's timeouts.

    ``lock_timeout`` and ``statement_timeout`` bound how long the daemon's loop can wait on
    anyone; ``idle_in_transaction_session_timeout`` makes the server end the session of a
    daemon frozen in the middle of a transaction (SIGSTOP, VM pause, half-open TCP), which
    releases its row locks so the others can recover its tasks. Only the calling thread's
    connections get them: handlers (pool threads and children) may hold transactions open
    as long as they like.

    They are set for each transaction (``set_config(…, true)``, as ``SET LOCAL``), never for
    the session: behind a transaction-pooling proxy (PgBouncer's ``pool_mode =
    transaction``) consecutive transactions of one client run on different server sessions,
    so a session setting would apply to other clients' transactions (a web request's, a
    handler's) and be missing from the daemon's own. The startup parameter ``options``
    cannot carry them either: PgBouncer refuses it or, told to ignore it, drops it.
    """
    limits = "SELECT " + ", ".join(
        f"set_config('{name}', '{_ms(seconds)}', true)"
        for name, seconds in (
            ("lock_timeout", LOCK_TIMEOUT),
            ("statement_timeout", STATEMENT_TIMEOUT),
            ("idle_in_transaction_session_timeout", max(1.0, idle_in_transaction)),
        )
    )
    for connection in connections.all():  # this thread's connection objects
        if connection.vendor != "postgresql":
            continue
        wrappers = connection.execute_wrappers
        if not any(isinstance(wrapper, _TransactionLimits) for wrapper in wrappers):
            wrappers.append(_TransactionLimits(limits))


class _TransactionLimits:
    """An execute wrapper that sets the daemon's limits in each transaction a statement opens.

    A statement opens a transaction when the connection is in autocommit (it is one) or
    when no transaction is open yet (the first statement of an ``atomic`` block: the driver
    sends BEGIN before it). The limits ride in front of that statement, in the same query
    string, so they cost no round trip: under the simple query protocol several statements
    in one string share one transaction, and ``set_config(…, true)`` lasts until it ends.
    Where one string cannot carry two statements (``executemany``, server-side cursors,
    psycopg 3's server-side binding), they go in a statement of their own first; that is
    skipped in autocommit, where it would be a transaction of its own and end at once.
    """

    def __init__(self, limits: str):
        self.limits = limits

    def __call__(self, execute, sql, params, many, context):
        """Run the statement, with the limits set first if it opens a transaction."""
        connection = context["connection"]
        autocommit = connection.get_autocommit()
        if not autocommit and not driver.transaction_idle(connection.connection):
            return execute(sql, params, many, context)  # the transaction has them already
        cursor = context["cursor"]
        named = getattr(cursor.cursor, "name", None) is not None  # a server-side cursor
        if many or named or not driver.runs_several_statements(cursor):
            if not autocommit:
                with connection.connection.cursor() as own:
                    own.execute(self.limits)
            return execute(sql, params, many, context)
        result = execute(f"{self.limits}; {sql}", params, many, context)
        driver.to_last_result(cursor)
        return result


def _ms(seconds: float) -> str:
    return f"{int(seconds * 1000)}ms"


def use_persistent_connections() -> None:
    """Keep this process's connections open across tasks, whatever ``CONN_MAX_AGE`` says.

    ``CONN_MAX_AGE`` is written for web requests; a worker that reconnects for every task
    runs about three times slower. Broken connections are still replaced: see ``heal``.
    """
    for connection in connections.all():
        connection.settings_dict["CONN_MAX_AGE"] = None
        connection.close_at = None


def heal() -> None:
    """Close connections that errored and no longer answer, so the next query reconnects."""
    close_old_connections()


def drop_all() -> None:
    """Close every connection of this process (after an outage, before retrying)."""
    for connection in connections.all(initialized_only=True):
        try:
            connection.close()
        except CONNECTION_ERRORS:
            connection.connection = None


def database_url(alias: str = "default") -> str:
    """The URL of the database ``alias`` uses right now, for a subprocess's ``DATABASE_URL``.

    Inside a test run this is the test database, so daemons started by tests and
    benchmarks see exactly the rows their parent wrote.
    """
    db = connections[alias].settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
