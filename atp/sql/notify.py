"""LISTEN/NOTIFY on PostgreSQL: the channel on which enqueues and pauses wake idle daemons.

A notification is delivered when the sending transaction commits (``atp.daemon.wakeup``
listens); SQLite has no such thing, and its daemons poll.
"""

from django.db import connection

from atp.sql.vendor import is_postgresql

#: The channel on which enqueues notify idle daemons (PostgreSQL LISTEN/NOTIFY).
NOTIFY_CHANNEL = "atp_enqueued"
#: The payload (on ``NOTIFY_CHANNEL``) saying that a queue was paused or resumed.
PAUSES_CHANGED = "atp:pauses"


def notify_pauses() -> None:
    """Tell the daemons to read the paused queues again (delivered on commit)."""
    if is_postgresql():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [NOTIFY_CHANNEL, PAUSES_CHANGED])


def notify_enqueued(queue: str) -> None:
    """Wake daemons listening for new tasks; PostgreSQL delivers it when the transaction commits."""
    if is_postgresql():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [NOTIFY_CHANNEL, queue])


def notify(channel: str, payload: str = "") -> None:
    """Send ``payload`` on ``channel`` (delivered when the transaction commits, at once in
    autocommit): the daemon's listener tests with it that it hears (``atp.daemon.wakeup``)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, %s)", [channel, payload])
