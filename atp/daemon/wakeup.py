"""Waking an idle daemon the moment a task is enqueued (PostgreSQL LISTEN/NOTIFY).

``enqueue_task`` sends ``NOTIFY atp_enqueued`` in its transaction (atp.sql), so PostgreSQL
delivers it on commit. The daemon waits on this listener's socket beside its pool, so an
idle daemon claims a new task within milliseconds instead of a poll interval. On SQLite, or
while the listening connection is down, the daemon falls back to polling.
"""

import logging

from django.db import connection

from atp import sql

logger = logging.getLogger("atp.daemon")


class Listener:
    """A dedicated autocommit connection that LISTENs on ATP's channel."""

    def __init__(self):
        self.raw = None
        self.pauses_changed = False  # a queue was paused or resumed (sql.PAUSES_CHANGED)

    def connect(self) -> None:
        """Open the listening connection (PostgreSQL only); failures leave polling in charge."""
        if self.raw is not None or not sql.is_postgresql():
            return
        try:
            # Django's own connection parameters, but a connection of our own: the
            # listener must stay outside the ORM's transactions.
            self.raw = connection.get_new_connection(connection.get_connection_params())
            self.raw.autocommit = True
            with self.raw.cursor() as cursor:
                cursor.execute(f"LISTEN {sql.NOTIFY_CHANNEL}")
        except Exception as exc:  # noqa: BLE001 - any failure means: poll instead
            logger.warning("LISTEN unavailable, polling instead: %s", exc)
            self.close()

    def handles(self) -> list:
        """The socket to wait on, if listening."""
        return [self.raw] if self.raw is not None else []

    def drain(self) -> bool:
        """Consume pending notifications; True if any arrived (or the connection broke)."""
        if self.raw is None:
            return False
        try:
            self.raw.poll()
        except Exception:  # noqa: BLE001 - psycopg2's own errors, not Django's wrappers
            self.close()
            return True  # we may have missed a notification: look at the queue
        arrived = bool(self.raw.notifies)
        if any(note.payload == sql.PAUSES_CHANGED for note in self.raw.notifies):
            self.pauses_changed = True
        self.raw.notifies.clear()
        return arrived

    def close(self) -> None:
        """Close the listening connection."""
        if self.raw is not None:
            try:
                self.raw.close()
            except Exception:  # noqa: BLE001, S110 - closing a broken connection may fail
                pass
        self.raw = None
