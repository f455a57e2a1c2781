"""Waking an idle daemon the moment a task is enqueued (PostgreSQL LISTEN/NOTIFY).

``enqueue_task`` sends ``NOTIFY atp_enqueued`` in its transaction (atp.sql.notify), so PostgreSQL
delivers it on commit. The daemon waits on this listener's socket beside its pool, so an
idle daemon claims a new task within milliseconds instead of a poll interval. On SQLite, or
while the listening connection is down, the daemon falls back to polling; a listening
connection that dies is logged and opened again (with backoff), so the fallback lasts only
as long as the database refuses it. Works on psycopg 3 and psycopg2 (atp.sql.driver).

LISTEN needs a server session of its own. Behind a transaction-pooling proxy (PgBouncer's
``pool_mode = transaction``) the LISTEN runs on whichever server session the proxy lends
for that one statement, and the notifications reach that session after it went back to
the pool, where the proxy drops them. ``ATP["LISTEN_DATABASE"]`` names a Django database
alias that connects directly, for the listener alone. To tell whether it hears anything,
each new listening connection also listens on a channel of its own and the daemon's own
connection notifies it: a listener that has not heard that within ``PROBE_TIMEOUT`` is
given up (with a warning that says what to set), and the daemon polls.
"""

import logging
import secrets
import time

from django.db import DEFAULT_DB_ALIAS, connections

from atp import sql
from atp.conf import settings
from atp.sql import driver

logger = logging.getLogger("atp.daemon")

#: Seconds between attempts to open the listening connection again, doubling up to the max.
RETRY_FIRST, RETRY_MAX = 0.5, 5.0
#: Seconds a new listening connection has to hear its own test notification. On a direct
#: connection it arrives within milliseconds of the commit, even on a busy server.
PROBE_TIMEOUT = 5.0


class Listener:
    """A dedicated autocommit connection that LISTENs on ATP's channel."""

    def __init__(self):
        self.raw = None
        self.retry_at = 0.0  # time.monotonic() of the next attempt to connect, when down
        self.retry_delay = RETRY_FIRST
        self.lost = False  # the connection died (or never opened): log its return
        self.pauses_changed = False  # a queue was paused or resumed (sql.PAUSES_CHANGED)
        # This listener's own channel, and when its test notification is overdue (None
        # once heard). A listener that never hears it is deaf: the daemon stops listening.
        self.probe_channel = f"atp_probe_{secrets.token_hex(8)}"
        self.probe_deadline: float | None = None
        self.deaf = False

    def connect(self) -> bool:
        """Open the listening connection (PostgreSQL only); True if it was opened now.

        A failure leaves polling in charge and schedules the next attempt.
        """
        if self.raw is not None or self.deaf or not sql.is_postgresql():
            return False
        try:
            # Django's connection parameters (the LISTEN_DATABASE alias's, else the default
            # database's), but a connection of our own: the listener must stay outside the
            # ORM's transactions.
            target = connections[settings.LISTEN_DATABASE or DEFAULT_DB_ALIAS]
            self.raw = target.get_new_connection(target.get_connection_params())
            self.raw.autocommit = True
            with self.raw.cursor() as cursor:
                cursor.execute(f"LISTEN {self.probe_channel}")
                cursor.execute(f"LISTEN {sql.NOTIFY_CHANNEL}")
            # Through the daemon's own connection, as enqueues notify.
            sql.notify(self.probe_channel, self.probe_channel)
            self.probe_deadline = time.monotonic() + PROBE_TIMEOUT
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

        True when it was reopened now (notifications sent while it was down are lost) or
        when notifications were read here: either way the caller should look at the queue.
        Also gives up a connection whose test notification is overdue.
        """
        if self.raw is not None:
            if self.probe_deadline is None or time.monotonic() < self.probe_deadline:
                return False
            heard = self.drain()  # the test notification may wait unread in the socket
            if self.probe_deadline is not None:
                self._give_up()
            return heard
        if time.monotonic() < self.retry_at:
            return False
        return self.connect()

    def reconnect_at(self) -> float:
        """When ``ensure`` next has something to do: reconnect, or judge the test notification.

        ``inf`` while listening (and heard), when given up, and on SQLite.
        """
        if self.raw is not None:
            return float("inf") if self.probe_deadline is None else self.probe_deadline
        if self.deaf or not sql.is_postgresql():
            return float("inf")
        return self.retry_at

    def _give_up(self) -> None:
        """Stop listening on a connection that does not hear its own test notification."""
        logger.warning(
            "LISTEN heard nothing (not even its own test notification within %g s): the "
            "connection goes through a transaction-pooling proxy such as PgBouncer, or to "
            "another database. Polling every POLL_INTERVAL instead; set ATP"
            "['LISTEN_DATABASE'] to a direct connection to the database for wake-ups by "
            "NOTIFY (README: 'Behind PgBouncer').",
            PROBE_TIMEOUT,
        )
        try:
            with self.raw.cursor() as cursor:
                # Behind a proxy this reaches the server session of the LISTEN only by
                # luck; a session that keeps listening just makes the proxy drop more.
                cursor.execute("UNLISTEN *")
        except Exception:  # noqa: BLE001, S110 - best effort, the connection is given up
            pass
        self.deaf = True
        self.probe_deadline = None
        self.close()

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
        if self.probe_channel in payloads:
            self.probe_deadline = None  # it hears: NOTIFY reaches this connection
            payloads = [payload for payload in payloads if payload != self.probe_channel]
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
