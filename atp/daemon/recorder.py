"""Recording outcomes on a connection of their own, while the loop claims on its own.

A draining daemon used to record a batch of outcomes and claim the next batch in one
transaction, on one connection: the daemon waited on one PostgreSQL backend, and that
backend waited on the daemon, so one core did the database's work however many the
machine has. With the recorder, the loop hands each batch of outcomes to this thread,
which records it in a transaction of its own on its own connection, while the loop goes
on claiming and handing over on the loop's connection: two backends work at once.

Why that is safe:
- Outcomes and claims touch different rows: a finish updates this daemon's RUNNING tasks,
  a claim locks ACCEPTED ones with ``SKIP LOCKED`` and never waits for a row.
- Every finish is fenced by its attempt number (``atp.tracker.reporting``), so a batch
  recorded again after a failure, or after its task was taken away, changes nothing twice.
- Until a batch has committed, its tasks are still RUNNING: a concurrency key or a unique
  key they hold is held a few milliseconds longer, never released early.
- The loop forgets a report (``pending``, ``holding``) only after the recorder says its
  commit went through, as before; a daemon killed meanwhile leaves RUNNING tasks that the
  sweeps recover, as before.

One batch at a time: ``submit`` takes a batch only when the previous one has been taken
back with ``result``. The thread wakes the loop (``wake``) when a batch is done.
PostgreSQL only: SQLite serialises writers, so a second connection would only wait.
"""

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import transaction

from atp import tracker
from atp.daemon import outcomes
from atp.daemon.containment import StepFailed, step
from atp.daemon.db import classify, drop_all, limit_daemon_sessions, use_persistent_connections


@dataclass
class Recorded:
    """What became of one batch: its log lines, or the error that rolled it back and what
    that error means (``atp.daemon.db.classify``, judged on the recorder's connection)."""

    size: int
    lines: list = field(default_factory=list)
    error: BaseException | None = None
    kind: str = ""


class OutcomeRecorder:
    """A thread that records batches of pool reports, one at a time, on its own connection."""

    def __init__(self, wake: Callable[[], None], idle_in_transaction: float):
        self._wake = wake
        self._idle_in_transaction = idle_in_transaction
        self._lock = threading.Lock()
        self._job = threading.Condition(self._lock)
        self._batch: list | None = None  # submitted, not yet recorded
        self._done: Recorded | None = None  # recorded, not yet taken back
        self._in_flight = 0  # reports submitted and not yet taken back
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name="atp-recorder", daemon=True)
        self._thread.start()

    @property
    def in_flight(self) -> int:
        """Reports handed over and not yet taken back with ``result`` (0: it is free)."""
        return self._in_flight

    def submit(self, batch: list) -> None:
        """Record ``batch`` (pool reports, oldest first) in the background."""
        with self._lock:
            if self._in_flight:
                raise RuntimeError("the recorder holds a batch already")
            self._batch, self._in_flight = list(batch), len(batch)
            self._job.notify()

    def result(self, wait: bool = False) -> Recorded | None:
        """The finished batch's outcome, taken back (None: none finished; ``wait`` for it)."""
        with self._lock:
            while wait and self._in_flight and self._done is None:
                self._job.wait()
            done, self._done = self._done, None
            if done is not None:
                self._in_flight = 0
            return done

    def stop(self) -> None:
        """End the thread (after the batch under way, if any) and close its connection."""
        with self._lock:
            self._stopping = True
            self._job.notify_all()
        self._thread.join(timeout=30)

    # --- the thread ---------------------------------------------------------------------

    def _serve(self) -> None:
        # This thread's own connection: the daemon's policy applies to it as to the loop's.
        use_persistent_connections()
        limit_daemon_sessions(idle_in_transaction=self._idle_in_transaction)
        try:
            while True:
                with self._lock:
                    while self._batch is None and not self._stopping:
                        self._job.wait()
                    if self._batch is None:
                        return
                    batch = self._batch
                done = self._record(batch)
                with self._lock:
                    self._batch, self._done = None, done
                    self._job.notify_all()
                self._wake()
        finally:
            drop_all()

    def _record(self, batch: list) -> Recorded:
        """One transaction: the batch's outcomes and their log records in one statement."""
        try:
            with transaction.atomic(), tracker.batched_log_records() as log_records:
                with step("outcome"):
                    lines = outcomes.record_reports(batch)
                    log_records.insert()
        except Exception as exc:  # noqa: BLE001 - the loop acts on it, by its kind
            kind = "error" if isinstance(exc, StepFailed) else classify(exc)
            if kind == "outage":
                drop_all()  # this thread's connection: the next batch reconnects
            return Recorded(len(batch), error=exc, kind=kind)
        return Recorded(len(batch), lines=lines)
