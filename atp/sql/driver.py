"""Where ATP's use of the two PostgreSQL drivers Django supports differs: psycopg 3 and psycopg2.

Django picks psycopg 3 when it is importable, else psycopg2; ATP's SQL is written to behave
the same on both (one statement per ``execute``, parameters in Django's ``%s`` style). What
cannot be written once lives here: reading a LISTEN connection's notifications, the
SQLSTATE of a driver error, COPY FROM STDIN, whether a cursor can send several statements in
one string (the one-round-trip enqueue; the daemon's limits, ``atp.daemon.db``), and whether
a transaction is open.
"""


class ConnectionLost(Exception):
    """The listening connection broke (server restart, ``pg_terminate_backend``, network)."""


def driver_name(raw) -> str:
    """``"psycopg"`` (psycopg 3) or ``"psycopg2"``: the driver of a raw DB-API connection."""
    return "psycopg" if hasattr(raw, "pgconn") else "psycopg2"


def take_notifications(raw) -> list[str]:
    """Consume the notifications that arrived on ``raw``; return their payloads.

    Call it when the connection's socket is readable. Raises ``ConnectionLost`` when the
    connection is broken. psycopg 3 delivers notifications through libpq's queue (read with
    ``consume_input`` and ``notifies``; its ``Connection.poll`` does not exist), psycopg2
    through ``poll()`` into the ``notifies`` list.
    """
    if driver_name(raw) == "psycopg":
        return _take_psycopg3(raw)
    try:
        raw.poll()
    except Exception as exc:  # noqa: BLE001 - psycopg2's own errors, not Django's wrappers
        raise ConnectionLost(str(exc).strip()) from exc
    if raw.closed:
        raise ConnectionLost("the connection is closed")
    payloads = [notification.payload for notification in raw.notifies]
    raw.notifies.clear()
    return payloads


def _take_psycopg3(raw) -> list[str]:
    from psycopg import pq

    pgconn = raw.pgconn
    try:
        # A terminated backend first sends its FATAL message (read here without error),
        # then closes the socket: the next call, on the next readable event, raises.
        pgconn.consume_input()
    except Exception as exc:  # noqa: BLE001 - psycopg's own errors, not Django's wrappers
        raise ConnectionLost(str(exc).strip()) from exc
    if pgconn.status != pq.ConnStatus.OK:
        message = pgconn.error_message.decode(errors="replace").strip()
        raise ConnectionLost(message or "the connection is broken")
    payloads = []
    while (notification := pgconn.notifies()) is not None:
        payloads.append(notification.extra.decode())
    return payloads


def transaction_idle(raw) -> bool:
    """Whether no transaction is open on the raw connection ``raw`` (libpq's status IDLE).

    Both drivers expose libpq's ``PQtransactionStatus`` as ``info.transaction_status``, IDLE
    being 0; asking costs no round trip.
    """
    return raw.info.transaction_status == 0


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error (Django's wrapper or the driver's own), if any."""
    for error in (exc, exc.__cause__):
        code = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
        if code:
            return code
    return None


def copy_from(cursor, statement: str, text) -> None:
    """Run ``COPY … FROM STDIN`` with the rows in ``text`` (a readable text file).

    ``cursor`` is Django's cursor. psycopg2 has ``copy_expert``; psycopg 3 ``copy()``,
    a context manager that takes the data in writes.
    """
    raw = cursor.cursor
    if not hasattr(raw, "copy_expert"):
        with raw.copy(statement) as copy:
            while chunk := text.read(1 << 16):
                copy.write(chunk)
        return
    raw.copy_expert(statement, text)


def runs_several_statements(cursor) -> bool:
    """Whether one ``execute`` on Django's ``cursor`` may hold several statements.

    psycopg2 sends a query with its parameters merged in, by the simple query protocol,
    which takes several statements. psycopg 3 does so with client-side binding (Django's
    default, ``ClientCursor``); with ``OPTIONS["server_side_binding"]`` it uses the extended
    protocol, one statement per query.
    """
    raw = cursor.cursor
    if not hasattr(raw, "copy_expert"):  # psycopg 3
        from psycopg import ClientCursor

        return isinstance(raw, ClientCursor)
    return True


def to_last_result(cursor) -> None:
    """Make the last statement of a multi-statement ``execute`` the one ``fetch*`` reads.

    psycopg2 keeps only the last statement's result; psycopg 3 keeps all of them and starts
    at the first.
    """
    raw = cursor.cursor
    if not hasattr(raw, "copy_expert"):  # psycopg 3
        while raw.nextset():
            pass
