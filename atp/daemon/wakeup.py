"""Waking an idle daemon the moment a task is enqueued (PostgreSQL LISTEN/NOTIFY).

``enqueue_task`` sends ``NOTIFY atp_enqueued`` in its transaction (atp.sql.notify), so PostgreSQL
delivers it on commit. The daemon waits on this listener's socket beside its pool, so an
idle daemon claims a new task within milliseconds instead of a poll interval. On SQLite, or
while the listening connection is down, the daemon falls back to polling; a listening
connection that dies is logged and opened again (with backoff), so the fallback lasts only
as long as the database refuses it. Works on psycopg 3 and psycopg2 (atp.sql.driver).
"""

import logging
import time

from django.db import connection

from atp import sql
from atp.sql import driver

logger = logging.getLogger("atp.daemon")

#: Seconds between attempts to open the listening connection again, doubling up to the max.
RETRY_FIRST, RETRY_MAX = 0.5, 5.0


class Listener:
    """A dedicated autocommit connection that LISTENs on ATP's channel."""

    def __init__(self):
        self.raw = None
        self.retry_at = 0.0  # time.monotonic() of the next attempt to connect, when down
        self.retry_delay = RETRY_FIRST
        self.lost = False  # the connection died (or never opened): log its return
        self.pauses_changed = False  # a queue was paused or resumed (sql.PAUSES_CHANGED)

    def connect(self) -> bool:
        """Open the listening connection (PostgreSQL only); True if it was opened now.

        A failure leaves polling in charge and schedules the next attempt.
        """
        if self.raw is not None or not sql.is_postgresql():
            return False
        try:
            # Django's own connection parameters, but a connection of our own: the
            # listener must stay outside the ORM's transactions.
            self.raw = connection.get_new_connection(connection.get_connection_params())
            self.raw.autocommit = True
            with self.raw.cursor() as cursor:
                cursor.execute(f"LISTEN {sql.NOTIFY_CHANNEL}")
        except Exception as exc:  # noqa: BLE001 - any failure means: poll instead, retry later
            if not self.lost:
                logger.warning("LISTEN unavailable, polling instead: %s", exc)
            self.lost = True
            self.close()
            self.retry_at = time.monotonic() + self.retry_delay
            self.retry_delay = min(RETRY_MAX, self.retry_delay * 2)
            return False
        if self.lost:
            logger.warning("LISTEN connection back: wake-ups by NOTIFY again")
        self.lost, self.retry_delay = False, RETRY_FIRST
        return True

    def ensure(self) -> bool:
        """Reconnect a listening connection that died, once its retry time has come.

        True when it was reopened now: notifications sent while it was down are lost, so
        the caller should look at the queue.
        """
        if self.raw is not None or time.monotonic() < self.retry_at:
            return False
        return self.connect()

    def reconnect_at(self) -> float:
        """When ``ensure`` will next try to reconnect (``inf`` while connected or on SQLite)."""
        if self.raw is not None or not sql.is_postgresql():
            return float("inf")
        return self.retry_at

    def handles(self) -> list:
        """The socket to wait on, if listening."""
        return [self.raw] if self.raw is not None else []

    def drain(self) -> bool:
        """Consume pending notifications; True if any arrived (or the connection broke)."""
        if self.raw is None:
            return False
        try:
            payloads = driver.take_notifications(self.raw)
        except driver.ConnectionLost as exc:
            logger.warning("LISTEN connection lost (%s); polling until it is back", exc)
            self.lost = True
            self.close()
            self.retry_at = time.monotonic()  # try again at once, then with backoff
            self.pauses_changed = True  # a pause's notification may be lost with it
            return True  # we may have missed a notification: look at the queue
        if sql.PAUSES_CHANGED in payloads:
            self.pauses_changed = True
        return bool(payloads)

    def close(self) -> None:
        """Close the listening connection."""
        if self.raw is not None:
            try:
                self.raw.close()
            except Exception:  # noqa: BLE001, S110 - closing a broken connection may fail
                pass
        self.raw = None
