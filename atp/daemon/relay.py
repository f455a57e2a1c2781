"""The event relay: a daemon thread that publishes the stored events to the broker.

Events are written to the database with their transitions (``LogRecord.event``/``fields``);
nothing on the enqueue path talks to the broker. The relay publishes them in id order
through Celery's own event dispatcher, on the ``celeryev`` exchange with Celery's routing
keys. One ``EventCursor`` row says how far it got: the relay locks it (SKIP LOCKED, so with
several daemons only one relays at a time), publishes, and moves it in the same transaction.
A broker outage rolls the transaction back: the cursor stays, and the next round resumes.
The same thread sends this daemon's worker events (online, heartbeat, offline).
"""

import logging
import os
import platform
import threading
import time

from celery.events.dispatcher import EventDispatcher
from celery.events.event import Event
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

import atp
from atp import events, sql
from atp.daemon.db import drop_all
from atp.models import EventCursor, LogRecord

logger = logging.getLogger("atp.relay")

#: Name of the cursor row of the relay that publishes to the broker.
CURSOR_NAME = "celeryev"
#: Events published per transaction at most.
BATCH_SIZE = 500
#: Seconds between relay rounds when there is nothing to publish.
INTERVAL = 0.2
MAX_BACKOFF = 5.0


class StoredEventDispatcher(EventDispatcher):
    """Celery's dispatcher, sending a stored event as it was recorded.

    Celery stamps each event with the sender's hostname, pid and clock when it is sent; a
    stored event already has the hostname, pid, timestamp and utcoffset of the process
    that made the transition, and its record id as clock, so they are kept.
    """

    def _prepare_event(self, type, fields, blind=False, Event=Event):
        return Event(type, fields)


def publish_pending(dispatcher: StoredEventDispatcher, batch_size: int = BATCH_SIZE) -> int | None:
    """Publish the next stored events after the cursor; return how many, or None if busy.

    None means another daemon holds the cursor (it is relaying), or a transaction writing
    events is still open. A publish error propagates after rolling back: the cursor stays.
    """
    cursor = EventCursor.objects.get_or_create(name=CURSOR_NAME)[0]
    if not LogRecord.objects.filter(pk__gt=cursor.position).exists():
        return 0  # the cheap check, without a lock, of an idle relay
    with transaction.atomic():
        cursor = _lock_cursor()  # type: ignore[assignment]
        if cursor is None:
            return None
        settled = sql.settled_id(LogRecord._meta.db_table)
        if settled is None:
            return None
        records = list(
            LogRecord.objects.filter(pk__gt=cursor.position, pk__lte=settled).order_by("pk")[
                :batch_size
            ]
        )
        for record in records:
            if record.event:
                dispatcher.publish(
                    record.event, events.celery_event(record), dispatcher.producer, retry=False
                )
        if records:
            dispatcher.app.clock.adjust(records[-1].pk)  # our worker events follow on
            cursor.position = records[-1].pk
            cursor.updated_at = timezone.now()
            cursor.save(update_fields=["position", "updated_at"])
    if records:  # committed: which daemon relayed which ids (the relay moves between daemons)
        logger.debug("Relayed events %d-%d", records[0].pk, records[-1].pk)
    return len(records)


def _lock_cursor() -> EventCursor | None:
    cursors = EventCursor.objects.filter(name=CURSOR_NAME)
    if sql.is_postgresql():
        return cursors.select_for_update(skip_locked=True).first()
    # SQLite has no row locks: the write takes the database's write lock for the
    # transaction, which serialises relays (a busy one makes this wait, not publish twice).
    cursors.update(updated_at=timezone.now())
    return cursors.first()


class Relay(threading.Thread):
    """Publishes stored events and this daemon's worker events until ``stop()``."""

    def __init__(self, app, hostname: str, freq: float):
        super().__init__(name="atp-relay", daemon=True)
        self.app = app
        self.hostname = hostname
        self.freq = freq
        self.stats = {"active": 0, "processed": 0}
        self._stopping = threading.Event()
        self._beat = threading.Event()
        self._conn = None
        self._stored: StoredEventDispatcher | None = None
        self._worker: EventDispatcher | None = None
        self._online = False
        self._backoff = 0.0

    # --- called from the daemon's thread -------------------------------------------------

    def beat(self, active: int, processed: int) -> None:
        """Note the daemon's numbers; the relay sends a ``worker-heartbeat`` with them."""
        self.stats = {"active": active, "processed": processed}
        self._beat.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Send ``worker-offline`` and end the thread (events not yet relayed stay stored)."""
        self._stopping.set()
        self.join(timeout)

    # --- the thread ---------------------------------------------------------------------

    def run(self) -> None:
        """The relay thread: publish batches until stopped, backing off while the broker is away."""
        try:
            while not self._stopping.is_set():
                busy = self._round()
                delay = self._backoff or (0 if busy else INTERVAL)
                self._stopping.wait(delay)
        finally:
            self._send_worker_event("worker-offline")
            self._disconnect()
            connection.close()

    def _round(self) -> bool:
        """One pass: connect, worker events, a batch of task events. True if more may wait."""
        try:
            self._connect()
            if not self._online:
                self._online = True
                self._worker_event("worker-online")
            if self._beat.is_set():
                self._beat.clear()
                self._worker_event("worker-heartbeat", **self.stats, loadavg=_loadavg())
            published = publish_pending(self._stored)  # type: ignore[arg-type]
        except DatabaseError as exc:
            self._fail("database", exc)
            drop_all()
            return False
        except Exception as exc:  # kombu/amqp/redis errors: the broker is away
            self._fail("broker", exc)
            self._disconnect()
            return False
        if self._backoff:
            logger.warning("Event relay of %s resumed", self.hostname)
            self._backoff = 0.0
        return bool(published) and published >= BATCH_SIZE  # type: ignore[operator]

    def _fail(self, what: str, exc: Exception) -> None:
        if not self._backoff:
            logger.error(
                "Event relay of %s: %s away, retrying: %s", self.hostname, what, exc, exc_info=True
            )
        self._backoff = min(MAX_BACKOFF, max(0.25, self._backoff * 2))

    def _connect(self) -> None:
        if self._conn is not None:
            return
        conn = self.app.connection_for_write()
        conn.ensure_connection(max_retries=1)
        self._conn = conn
        self._stored = StoredEventDispatcher(
            conn, hostname=self.hostname, app=self.app, buffer_while_offline=False
        )
        self._worker = EventDispatcher(
            conn, hostname=self.hostname, app=self.app, buffer_while_offline=False
        )

    def _disconnect(self) -> None:
        for closable in (self._stored, self._worker, self._conn):
            if closable is not None:
                try:
                    closable.close()
                except Exception:  # noqa: S110 (closing a dead connection may fail; nothing to do)
                    pass
        self._conn = self._stored = self._worker = None

    def _worker_event(self, type_: str, **fields) -> None:
        self._worker.send(  # type: ignore[union-attr]
            type_,
            freq=self.freq,
            sw_ident="atpd",
            sw_ver=atp.__version__,
            sw_sys=platform.system(),
            **fields,
        )

    def _send_worker_event(self, type_: str) -> None:
        """Best effort at shutdown: a broker that is away just misses the goodbye."""
        try:
            self._connect()
            self._worker_event(type_)
        except Exception as exc:
            logger.warning("%s not sent for %s: %s", type_, self.hostname, exc)


def _loadavg() -> list[float]:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return [0.0, 0.0, 0.0]


def wait_published(timeout: float = 10.0) -> bool:
    """Test/ops helper: wait until the relay cursor reaches the newest stored event."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        newest = LogRecord.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
        cursor = EventCursor.objects.filter(name=CURSOR_NAME).first()
        if cursor is not None and cursor.position >= newest:
            return True
        time.sleep(0.05)
    return False
