"""The atpd engine: claims tasks from the database queue and runs their handlers in a pool.

One loop, one thread: collect what the pool reports, record it, enforce time limits,
heartbeat, sweep, claim as many tasks as there are free slots, then sleep until a child
reports, a task is enqueued (LISTEN/NOTIFY), a signal arrives or a timer is due. On
PostgreSQL the outcomes are recorded by a second thread on a connection of its own
(``atp.daemon.recorder``), while the loop claims the next batch on its own. Every
database step tolerates the database going away: the step is retried with backoff, and
outcomes not yet recorded are kept until it is back. A step that fails with an error
(not an outage) is contained to its task or type (``atp.daemon.containment``).
"""

import logging
import multiprocessing.connection
import os
import random
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from django.db import connection, transaction
from django.utils import timezone

from atp import discovery, events, schedules, tracker
from atp.conf import DB_RETRY_MAX_BACKOFF, settings
from atp.daemon import outcomes, workers
from atp.daemon.asyncio_pool import AsyncioPool
from atp.daemon.containment import Quarantine, StepFailed, step
from atp.daemon.db import classify, drop_all, limit_daemon_sessions, use_persistent_connections
from atp.daemon.limits import silence_reason, silent_slots
from atp.daemon.pool import Crashed, ProcessPool
from atp.daemon.recorder import OutcomeRecorder, Recorded
from atp.daemon.schedules import ScheduleClock
from atp.daemon.thread_pool import ThreadPool
from atp.daemon.wakeup import Listener
from atp.exceptions import ServerIdInUse
from atp.models import TaskInstance
from atp.tracker import SweepEntry, subtasks

if TYPE_CHECKING:  # imported at run time only with a broker: Celery is optional
    from atp.daemon.broker import BrokerLinks

logger = logging.getLogger("atp.daemon")

POOLS: dict[str, type[ProcessPool] | type[ThreadPool] | type[AsyncioPool]] = {
    "processes": ProcessPool,
    "threads": ThreadPool,
    "asyncio": AsyncioPool,
}
#: Longest pause between reconnection attempts while the database is away (the settings
#: checks compare it with ``WORKER_TIMEOUT``: ``atp.conf.DB_RETRY_MAX_BACKOFF``).
MAX_BACKOFF = DB_RETRY_MAX_BACKOFF
#: First and longest pause before retrying a step the database was too busy for (a lock
#: or statement timeout; SQLite's "database is locked"). It used up nothing: retry soon.
BUSY_BACKOFF, MAX_BUSY_BACKOFF = 0.05, 1.0
#: Longest pause of a step that keeps failing with an error (claims of no type in
#: particular, sweeps), so a persistent bug is logged once a minute, not in a tight loop.
MAX_ERROR_BACKOFF = 60.0
#: Longest a loop spends deleting retired tasks: a long retention backlog (a million rows
#: after a pause) is deleted a slice per loop, between claims, instead of holding the loop
#: (while a sweep is under way the loop does not sleep: it checks its wake-ups and goes on).
RETENTION_SLICE = 0.01
#: Retired tasks per batch of the daemon's own sweeps: a batch is one statement the loop
#: cannot leave, so it is kept short (~10 ms); atp_cleanup takes ATP['CLEANUP_BATCH_SIZE'].
RETENTION_BATCH = 100
#: Seconds a handler may outlive a terminate signal (``revoke(terminate=True)``) before
#: it is killed with SIGKILL: a handler that ignores SIGTERM still ends.
TERMINATE_GRACE = 5.0


def new_server_id() -> str:
    """A random server id, unique per process start, printed like the seed's: 0x%016X."""
    return f"0x{int.from_bytes(os.urandom(8), 'big'):016X}"


@dataclass
class WorkerOptions:
    """Everything that shapes a daemon's run; defaults come from ``settings.ATP``."""

    concurrency: int = field(default_factory=lambda: settings.CONCURRENCY or os.cpu_count() or 1)
    server_id: str = field(default_factory=new_server_id)
    queues: list[str] | None = None
    burst: bool = False
    max_tasks: int | None = None
    poll_interval: float = field(default_factory=lambda: settings.POLL_INTERVAL)
    pool: str = "processes"


class _ServerLog(logging.LoggerAdapter):
    """Prefixes every line with the daemon's server id, as the seed's ``[0xID]``."""

    def process(self, msg, kwargs):
        """Prefix the message with the server id."""
        return f"[{self.extra['server_id']}] {msg}", kwargs


class Daemon:
    """One atpd process: a claim loop in front of a pool of handler slots."""

    def __init__(self, options: WorkerOptions):
        self.options = options
        self.log = _ServerLog(logger, {"server_id": options.server_id})
        # Made by run() before the loop uses it; None only between __init__ and run().
        self.pool: ProcessPool | ThreadPool | AsyncioPool = None  # type: ignore[assignment]
        self.listener = Listener()
        self.stopping = ""  # "", "warm" or "cold"
        self.stop_announced = ""  # the stop stage last logged (signal handlers cannot log)
        self.pending: list = []  # pool reports not yet recorded (the oldest may be recording)
        # Records outcomes on a connection of its own (PostgreSQL; made by run()).
        self.recorder: OutcomeRecorder | None = None
        self.claimed_total = 0
        self.processed = 0
        self.since_cleanup = 0
        # The retention sweep under way (its iterator), if any.
        self.retention: Iterator[list[SweepEntry]] | None = None
        self.retention_deleted = 0
        self.queue_empty = False
        self.soft_signalled: set[int] = set()
        now = time.monotonic()
        self.next_poll = self.next_heartbeat = self.next_idle_cleanup = self.next_sweep = now
        self.db_down_since: float | None = None
        self.db_retry_at = 0.0
        self.db_up_since = now
        self.busy_streak = 0  # steps in a row the database was too busy for
        self.errors: dict[str, int] = {}  # step → errors in a row (for their backoff)
        self.retry_at: dict[str, float] = {}  # step → when a step that failed may run again
        self.instance = workers.new_instance()
        self.registered = False
        # Attempts handed to the pool and not yet recorded: task id → attempt number. What
        # the database says this daemon runs, beyond these, is an orphan (``_reconcile``).
        self.holding: dict[int, int] = {}
        self.reconcile_due = True
        self.reconciled = False  # the first reconcile (at start) has not run yet
        self.record_singly = False  # the last batch of outcomes failed with an error
        self.search_poison = False  # the last claim failed with an error
        self.quarantine = Quarantine(self.log)
        self.exit_code = 0
        self._wake_reader, self._wake_writer = os.pipe()
        # Event relay + remote control, if a broker is configured (atp.daemon.broker).
        self.broker: BrokerLinks | None = None
        self.paused: list[str] = []  # the paused queues as last read (atp.tracker.pausing)
        self.paused_types: list[int] = []  # the paused task types' ids, read with them
        self.paused_read_at = float("-inf")
        self.pauses_read = self.pauses_checked = 0  # reads; the last the pool was checked with
        self.schedules = ScheduleClock()  # when to tick the periodic tasks (atp.schedules)

    # --- life cycle ---------------------------------------------------------------------

    def run(self) -> int:
        """Serve the queue until stopped (or, with ``burst``, until it is empty).

        Returns 0, or 1 when it refused to start (another live daemon has its server id)
        or stopped because another process took its server id over.
        """
        use_persistent_connections()
        limit_daemon_sessions(idle_in_transaction=settings.WORKER_TIMEOUT)
        # Before the pool starts: its children inherit the name they send events under.
        events.set_node_name(events.daemon_node_name(self.options.server_id))
        self.pool = POOLS[self.options.pool](self.options.concurrency)
        previous = self._install_signal_handlers()
        if connection.vendor == "postgresql" and settings.PARALLEL_RECORDING:
            self.recorder = OutcomeRecorder(self._poke, idle_in_transaction=settings.WORKER_TIMEOUT)
        try:
            # At start an error is not contained: the daemon refuses to start with it.
            while not self._db(self._register, "register", contain=False):
                self._sleep_until(self.db_retry_at)
            while not self._db(self._sync_schedules, "schedules", contain=False):
                self._sleep_until(self.db_retry_at)
            self._db(
                self._sync_task_types, "task types"
            )  # if the database fails here, enqueues do it
            self.listener.connect()
            if settings.EVENTS_BROKER_URL:
                # Imported only here: Celery is needed only with a broker (atp[redis], atp[amqp]).
                from atp.daemon.broker import BrokerLinks

                self.broker = BrokerLinks.start(self, events.node_name())
            self.log.info(
                "atpd started: %s pool of %d, queues %s, pid %d",
                self.options.pool,
                self.options.concurrency,
                ",".join(self.options.queues or ["*"]),
                os.getpid(),
            )
            while not self._finished():
                self._contained_step()
        except ServerIdInUse as exc:
            self.log.error("atpd refused to start: %s", exc)
            return 1
        finally:
            self._shut_down(previous)
        self.log.info("atpd stopped after %d task(s)", self.processed)
        return self.exit_code

    def _register(self) -> None:
        """Register the Worker row, refusing an id a live daemon holds (ServerIdInUse)."""
        workers.register_worker(
            self.options.server_id, self.instance, worker_timeout=settings.WORKER_TIMEOUT
        )
        self.registered = True

    def _sync_task_types(self) -> None:
        """Create or update the types of the installed apps' ``@task`` functions; log stale ones."""
        for line in discovery.sync_task_types():
            self.log.info("%s", line.capitalize())
        for identifier, handler, why in discovery.stale_task_types():
            self.log.warning(
                "Task type %s: its handler %s does not import (%s); its tasks cannot run",
                identifier,
                handler,
                why,
            )

    def _finished(self) -> bool:
        busy = self.pool.busy() or self.pending
        if self.stopping:
            return not busy
        drained = (self.options.burst and self.queue_empty) or self._quota_used()
        return drained and not busy

    def _quota_used(self) -> bool:
        return self.options.max_tasks is not None and self.claimed_total >= self.options.max_tasks

    def _contained_step(self) -> None:
        """One turn of the loop; an unforeseen error is logged and the daemon serves on."""
        try:
            self._step()
        except Exception:
            self.log.exception("Error in the daemon's loop (contained; it serves on)")
            time.sleep(0.5)  # a bug that fails every turn must not spin the CPU

    def _step(self) -> None:
        if self.stopping != self.stop_announced:
            self._announce_stop()
        if self.stopping == "cold":
            self._stop_cold()
        self._take_recorded()
        reports = self.pool.collect()
        if reports:
            self.pending += reports
            self.queue_empty = False  # a finished task may have re-enqueued work
        self._enforce_time_limits()
        if self.reconcile_due:
            self._db(self._reconcile, "reconcile")
        now = time.monotonic()
        if now >= self.next_heartbeat:
            self._db(self._heartbeat, "heartbeat")
        # Every CLEANUP_EVERY dequeues, but not more often than heartbeats: at thousands of
        # tasks a second the sweeps would otherwise run several times a second for nothing.
        if self.since_cleanup >= settings.CLEANUP_EVERY and now >= self.next_sweep:
            self._db(self._cleanup, "sweep")
        if self.retention is not None:
            self._db(self._sweep_retired, "sweep")
        if now >= self.schedules.due_at:
            self._db(self._tick_schedules, "schedules")
        if self.pool.busy():
            self._db(self._give_back_paused, "pauses")
        if self._db_step_due():
            self._db(self._record_and_claim, "record and claim")
        if self.queue_empty and now >= self.next_idle_cleanup:
            self._db(self._idle_cleanup, "sweep")
        self._wait()

    def _db_step_due(self) -> bool:
        """Whether recording and claiming is worth a commit now.

        Every step costs a commit, so while the pool is well stocked with prefetched work
        the daemon lets outcomes pile up and records them (and claims the next batch) once
        the pool runs low: large batches, few commits. With nothing more to claim, or when
        stopping, outcomes are recorded at once; so are prefetched attempts taken back for
        a pause, whose tasks must be back in the queue at once, however well stocked.
        """
        hungry = self.pool.hungry()
        if hungry and self._claim_size():
            return True
        recordable = self._recordable()
        if any(getattr(report, "kill_reason", "") == "paused" for report in recordable):
            return True
        return bool(recordable) and bool(hungry or self.stopping or self.queue_empty)

    def _recordable(self) -> list:
        """The reports a step could record now: none while the recorder holds a batch."""
        if self.recorder is not None and self.recorder.in_flight:
            return []
        return self.pending

    # --- signals ------------------------------------------------------------------------

    def _install_signal_handlers(self) -> dict:
        os.set_blocking(self._wake_writer, False)
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        for sig in previous:
            signal.signal(sig, self._on_stop_signal)
        return previous

    def _on_stop_signal(self, signum, frame) -> None:
        """First SIGTERM/SIGINT: warm stop. Second: cold stop (kill handlers, re-enqueue)."""
        self.stopping = "cold" if self.stopping else "warm"
        self._poke()

    def _announce_stop(self) -> None:
        """Log, once per stage, that a stop began and what it waits for."""
        self.stop_announced = self.stopping
        running = [slot.attempt for slot in self.pool.in_flight()]
        names = ", ".join(f"{a.type}::{a.identifier} (id {a.task_id})" for a in running[:10])
        names += " …" if len(running) > 10 else ""
        queued = max(0, self.pool.held - len(running))
        if self.stopping == "warm":
            self.log.warning(
                "Warm stop: claiming nothing more; waiting for %d running handler(s)%s, "
                "%d prefetched attempt(s) and %d outcome(s) to record. Signal again for a "
                "cold stop.",
                len(running),
                f" ({names})" if names else "",
                queued,
                len(self.pending),
            )
        else:
            self.log.warning(
                "Cold stop: killing %d running handler(s) and giving their tasks and %d "
                "prefetched attempt(s) back to the queue",
                len(running),
                queued,
            )

    def _poke(self) -> None:
        """Wake the loop from a signal handler or another thread (the recorder)."""
        try:
            os.write(self._wake_writer, b"r")
        except BlockingIOError:
            pass  # the pipe is full: the loop wakes anyway

    def request_stop(self) -> None:
        """Warm stop asked from another thread (remote control's ``shutdown``)."""
        if not self.stopping:
            self._on_stop_signal(signal.SIGTERM, None)

    def _shut_down(self, previous_handlers: dict) -> None:
        if self.stopping == "cold" or self.pool.busy():
            self._cold_stop()
        self.pool.stop()
        if self.recorder is not None:
            self.recorder.stop()
        self.listener.close()
        if self.registered:
            self._db(lambda: workers.stop_worker(self.options.server_id, self.instance), "stop")
        if self.broker is not None:
            self.broker.stop()
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)

    def _kill_running(self, reason: str) -> list:
        """SIGKILL every running handler not already being killed; withdraw the rest.

        Returns the attempts that were claimed but had not started (prefetched).
        """
        slots = [slot for slot in self.pool.in_flight() if not slot.kill_reason]
        if slots:
            self.log.warning("%s: killing %d running handler(s)", reason.capitalize(), len(slots))
        for slot in slots:
            self.pool.kill(slot.attempt.task_id, signal.SIGKILL, reason)
        return self.pool.withdraw(reason)

    def _stop_cold(self) -> None:
        """Kill the running handlers; their tasks and the unstarted ones go back to the queue."""
        for attempt in self._kill_running("cold stop"):
            self.pending.append(Crashed(attempt, "had not started", "cold stop", 0))

    def _cold_stop(self) -> None:
        """Kill running handlers and put their tasks back in the queue at once."""
        self._stop_cold()
        deadline = time.monotonic() + 10
        while (self.pool.busy() or self.pending) and time.monotonic() < deadline:
            self.pending += self.pool.collect()
            self._db(self._record_and_claim, "record")  # claims nothing: stopping
            time.sleep(0.05)

    # --- the database -------------------------------------------------------------------

    def _db(self, work, name: str, *, contain: bool = True) -> bool:
        """Run one database step; return whether it ran to the end.

        What a failure means decides what follows (``atp.daemon.db.classify``):
        an outage is noted once, every connection dropped, and every step retried with
        backoff, while the loop keeps serving the pool; a busy database (a lock timeout)
        retries soon, on the same connections; an error is contained (``_contain``),
        or raised when ``contain`` is false.
        """
        now = time.monotonic()
        if now < self.db_retry_at or now < self.retry_at.get(name, 0.0):
            return False
        if self.db_down_since is not None:
            # The outage guard starts at reconnection, before any step can judge peers.
            self.db_up_since = now
        try:
            work()
        except ServerIdInUse:
            raise
        except Exception as exc:
            kind = "error" if isinstance(exc, StepFailed) else classify(exc)
            if kind == "error" and not contain:
                raise
            self._failed(name, exc, kind)
            return False
        self.busy_streak = 0
        self.errors.pop(name, None)
        if self.db_down_since is not None:
            self.log.warning("Database back after %.1f s", time.monotonic() - self.db_down_since)
            self.db_down_since = None
            self.queue_empty = False
            self.reconcile_due = True  # a commit whose reply was lost may have left orphans
            self.listener.connect()
        return True

    def _failed(self, name: str, exc: BaseException, kind: str) -> None:
        """Act on a database step that failed, by what the failure means (``classify``)."""
        if kind == "outage":
            self._outage(exc)
        elif kind == "busy":
            self._busy(name, exc)
        else:
            cause = (exc.__cause__ or exc) if isinstance(exc, StepFailed) else exc
            self._contain(exc.step if isinstance(exc, StepFailed) else name, cause)

    def _outage(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self.db_down_since is None:
            self.db_down_since = now
            self.log.error("Database unavailable, retrying with backoff: %s", exc)
        backoff = min(MAX_BACKOFF, 0.25 * 2 ** min(6, (now - self.db_down_since)))
        self.db_retry_at = now + backoff
        drop_all()
        self.listener.close()

    def _busy(self, name: str, exc: BaseException) -> None:
        """The database was too busy for a step (a lock wait gave up): retry it soon."""
        self.busy_streak += 1
        if self.busy_streak == 1 or self.busy_streak % 100 == 0:
            self.log.warning(
                "Database busy during %s (%d in a row), retrying: %s", name, self.busy_streak, exc
            )
        backoff = min(MAX_BUSY_BACKOFF, BUSY_BACKOFF * 2 ** min(5, self.busy_streak - 1))
        self.db_retry_at = time.monotonic() + backoff * (0.5 + random.random())  # noqa: S311

    def _contain(self, name: str, exc: BaseException) -> None:
        """A step failed with an error (not an outage): keep it to its task or type.

        Outcomes are recorded one by one next time, and a failed claim looks for the type
        that fails it; other steps just wait for their next turn, longer each time.
        """
        count = self.errors[name] = self.errors.get(name, 0) + 1
        backoff = min(MAX_ERROR_BACKOFF, 0.5 * 2 ** min(8, count - 1))
        if name == "outcome":
            self.record_singly = True
            backoff = 0.0
            what = "recording outcomes; recording them one by one"
        elif name == "claim":
            self.search_poison = count == 1
            what = "claiming; looking for the task type that fails it"
            if count > 1:
                what = f"claiming (no one task type fails it); claims pause {backoff:g} s"
            else:
                backoff = 0.0
        else:
            what = f"{name}; retried in {backoff:g} s"
        self.retry_at[name] = time.monotonic() + backoff
        self.log.error(
            "Error in %s (contained): %s: %s", what, type(exc).__name__, exc, exc_info=exc
        )

    # --- claiming and starting ----------------------------------------------------------

    def _paused_queues(self) -> list[str]:
        """The paused queues, read again at every poll interval or when a pause notifies.

        Kept here so the one-statement claim needs no other table; a pause reaches this
        daemon within one poll interval, at once on PostgreSQL (``Listener.pauses_changed``).
        Call inside the claim's transaction.
        """
        now = time.monotonic()
        if self.listener.pauses_changed or now >= self.paused_read_at + self.options.poll_interval:
            self.listener.pauses_changed = False
            (self.paused, self.paused_types), self.paused_read_at = tracker.current_pauses(), now
            self.pauses_read += 1
        return self.paused

    def _give_back_paused(self) -> None:
        """Take back the prefetched attempts of a queue or type paused since their claim.

        They are RUNNING in the database, but no handler began them, and a paused queue or
        type starts nothing. Checked each time the pauses are read again (at once when a
        pause notifies, on PostgreSQL; else every poll interval), however busy the pool:
        the attempts leave the pool (``take_back``: none of them can begin any more) and
        are recorded with the next batch, back in the queue, ACCEPTED, no restart used.
        """
        self._paused_queues()
        if self.pauses_checked == self.pauses_read:
            return
        unstarted = self.pool.unstarted()
        pauses = (self.paused, self.paused_types)
        ids = tracker.paused_among([attempt.task_id for attempt in unstarted], pauses)
        self.pauses_checked = self.pauses_read
        taken = self.pool.take_back(ids)
        if taken:
            self.log.info("Taking back %d prefetched attempt(s): paused", len(taken))
        self.pending += [Crashed(attempt, "had not begun", "paused", 0) for attempt in taken]

    def _claim_size(self) -> int:
        """How many tasks to claim now: the free slots, within ``--max-tasks``."""
        if self.stopping or self.queue_empty or time.monotonic() < self.retry_at.get("claim", 0):
            return 0
        free = self.pool.free()
        if self.options.max_tasks is not None:
            free = min(free, self.options.max_tasks - self.claimed_total)
        return max(0, free)

    def _claim(self, limit: int, exclude_types=()) -> list:
        return tracker.claim_tasks(
            self.options.server_id,
            limit=limit,
            queues=self.options.queues,
            limited=self.pool.idle(),  # concurrency-limited tasks: idle slots only
            paused_queues=self._paused_queues(),
            exclude_types=exclude_types,
        )

    def _record_and_claim(self) -> None:
        """Record the collected outcomes and claim the next batch.

        With the recorder (PostgreSQL), the outcomes go to its thread, which records them
        on its own connection while this one claims: two transactions that run at once
        (``atp.daemon.recorder`` says why that is safe). Otherwise, and whenever a half
        must run in savepoints (recording one by one, searching a poison type) or the
        daemon is stopping, both halves go in one transaction: one commit per loop.
        Claiming and starting together (``tracker.claim_tasks``) leaves no window in which
        this daemon holds a claimed task it has not started. Reports leave ``pending`` only
        after their commit, so an outage in the middle loses none of them: they are
        recorded again once the database is back. An error in either half names its half
        (``StepFailed``), for ``_contain``.
        """
        claim = self._claim_size()
        if self.recorder is None or self.record_singly or self.stopping:
            self._record_and_claim_together(claim)
        elif claim and (self.search_poison or self._releases_a_key()):
            self._record_and_claim_together(claim)
        else:
            if self.pending and not self.recorder.in_flight:
                self.recorder.submit(self.pending)
            if claim:
                with transaction.atomic(), tracker.batched_log_records() as log_records:
                    with step("claim"):
                        attempts = self._claim(claim, self.quarantine.excluded())
                        log_records.insert()
                self.errors.pop("claim", None)
                self._claimed(claim, attempts)

    def _releases_a_key(self) -> bool:
        """Whether an outcome not yet recorded frees a place of a concurrency key.

        Its claim then waits for it, in the same transaction: a place held until another
        connection commits would keep the key's next task out of this claim.
        """
        return any(report.attempt.limited for report in self.pending)

    def _record_and_claim_together(self, claim: int) -> None:
        """Both halves in one transaction, on this thread's connection."""
        self._take_recorded(wait=True)  # a batch may not be recorded twice at once
        batch = list(self.pending)
        # Both halves' log records go in one statement, except when a half runs in
        # savepoints that may roll back (recording one by one, searching a poison type).
        hold = not (self.record_singly or (self.search_poison and claim))
        with transaction.atomic(), tracker.batched_log_records(hold) as log_records:
            if self.search_poison and claim:
                self.search_poison = False
                with step("claim"):
                    self.quarantine.search(
                        lambda exclude: self._claim(1, exclude), self.options.queues
                    )
            with step("outcome"):
                if self.record_singly:
                    lines = outcomes.record_singly(batch, self.log)
                else:
                    lines = outcomes.record_reports(batch)
            with step("claim"):
                attempts = self._claim(claim, self.quarantine.excluded()) if claim else []
            # Should the held records fail, the outcomes are recorded one by one next time,
            # with their own statements, and a claim that still fails then names its task
            # type (atp.daemon.containment).
            with step("outcome"):
                log_records.insert()
        self.errors.pop("claim", None)
        self._recorded(batch, lines)
        self._claimed(claim, attempts)

    def _take_recorded(self, wait: bool = False) -> None:
        """Take back the recorder's finished batch, if any (``wait``: wait for one under way)."""
        if self.recorder is None:
            return
        done: Recorded | None = self.recorder.result(wait)
        if done is None:
            return
        if done.error is None:
            self._recorded(self.pending[: done.size], done.lines)
            # A claim that ran meanwhile could not see what the batch re-enqueued or
            # released (retries, dependents): look again.
            self.queue_empty = False
        else:
            self._failed("outcome", done.error, done.kind)

    def _recorded(self, batch: list, lines: list) -> None:
        """Forget the reports of ``batch`` (the oldest of ``pending``): they are committed."""
        self.record_singly = False
        self.errors.pop("outcome", None)
        del self.pending[: len(batch)]
        for report in batch:
            if self.holding.get(report.attempt.task_id) == report.attempt.number:
                del self.holding[report.attempt.task_id]
            self.soft_signalled.discard(report.attempt.task_id)  # its next attempt is new
        self.processed += len(batch)
        for level, message, args in lines:
            self.log.log(level, message, *args)

    def _claimed(self, claim: int, attempts: list) -> None:
        """Start the attempts a committed claim of ``claim`` tasks returned."""
        if claim and not attempts:
            self.queue_empty = True
            self.next_poll = time.monotonic() + self.options.poll_interval
        self.claimed_total += len(attempts)
        self.since_cleanup += len(attempts)
        # Limited attempts first, so they take the idle slots they were claimed for instead
        # of queueing behind other work while holding a place of their concurrency key.
        attempts.sort(key=lambda attempt: not attempt.limited)
        self._hand_over(attempts)  # only now: the children must see the committed rows

    def _hand_over(self, attempts) -> None:
        """Give claimed (committed, RUNNING) attempts to the pool.

        An attempt the pool cannot take is reported as crashed, so its task is restarted
        or failed by its type's rules instead of staying RUNNING with no handler.
        """
        for attempt in attempts:
            self.holding[attempt.task_id] = attempt.number
        try:
            self.pool.submit_many(attempts)
        except Exception:
            self.log.exception(
                "Handing %d attempt(s) to the pool failed; one by one", len(attempts)
            )
            for attempt in attempts:
                try:
                    self.pool.submit_many([attempt])
                except Exception as exc:
                    self.log.error(
                        "Task %s::%s (id %d) could not be handed to the pool",
                        attempt.type,
                        attempt.identifier,
                        attempt.task_id,
                        exc_info=exc,
                    )
                    reason = f"could not be handed to the pool ({type(exc).__name__}: {exc})"
                    self.pending.append(Crashed(attempt, reason, "", 0))
        for attempt in attempts:
            self.log.info(
                "Started %s::%s (id %d, attempt %d)",
                attempt.type,
                attempt.identifier,
                attempt.task_id,
                attempt.number,
            )

    # --- time limits --------------------------------------------------------------------

    def _enforce_time_limits(self) -> None:
        """The wall-clock limits: soft (SIGUSR1), hard (SIGKILL). Timeout: ``_kill_silent``."""
        now = time.monotonic()
        for slot in self.pool.in_flight():
            attempt, elapsed = slot.attempt, now - slot.started
            if slot.kill_reason:
                # A handler may survive a terminate signal (SIGTERM caught or ignored): the
                # grace period, and the hard limit, still end it with SIGKILL.
                if slot.kill_signal != signal.SIGKILL and not slot.escalated:
                    past_hard = attempt.hard_time_limit and elapsed > attempt.hard_time_limit
                    if now >= slot.killed_at + TERMINATE_GRACE or past_hard:
                        self.log.warning(
                            "Task %d outlived signal %d for %.1f s; killing it (SIGKILL)",
                            attempt.task_id,
                            slot.kill_signal,
                            now - slot.killed_at,
                        )
                        self.pool.escalate(slot)
                continue
            if attempt.hard_time_limit and elapsed > attempt.hard_time_limit:
                self.pool.kill(
                    attempt.task_id,
                    signal.SIGKILL,
                    f"killed after exceeding its hard time limit of {attempt.hard_time_limit:g} s",
                )
            elif (
                attempt.soft_time_limit
                and elapsed > attempt.soft_time_limit
                and attempt.task_id not in self.soft_signalled
                and isinstance(self.pool, ProcessPool)
            ):
                # SIGUSR1 makes the child raise SoftTimeLimitExceeded inside the handler.
                self.soft_signalled.add(attempt.task_id)
                os.kill(slot.process.pid, signal.SIGUSR1)  # type: ignore[arg-type]

    def _next_deadline(self) -> float:
        in_flight = self.pool.in_flight()
        running = [slot for slot in in_flight if not slot.kill_reason]
        deadlines = [
            slot.started + slot.attempt.hard_time_limit
            for slot in running
            if slot.attempt.hard_time_limit
        ]
        deadlines += [
            slot.started + slot.attempt.soft_time_limit
            for slot in running
            if slot.attempt.soft_time_limit and slot.attempt.task_id not in self.soft_signalled
        ]
        deadlines += [
            min(
                slot.killed_at + TERMINATE_GRACE,
                slot.started + (slot.attempt.hard_time_limit or float("inf")),
            )
            for slot in in_flight
            if slot.kill_reason and slot.kill_signal != signal.SIGKILL and not slot.escalated
        ]
        return min(deadlines, default=float("inf"))

    # --- heartbeats, liveness, sweeps ---------------------------------------------------

    def _heartbeat(self) -> None:
        """Beat, kill silent handlers, act on kill requests, recover daemons that died."""
        self.next_heartbeat = time.monotonic() + settings.HEARTBEAT_INTERVAL
        server_id = self.options.server_id
        state = workers.beat(server_id, self.instance)
        if state == "taken":
            self.log.error(
                "Another process took over server id %s while this daemon was silent (its "
                "tasks were recovered); this daemon stops without touching them",
                server_id,
            )
            self._drop_held(self._kill_running("server id taken over"))
            self.registered = False  # the row is the other process's now
            self.exit_code = 1
            self.stopping = "cold"
            return
        if state == "lost":
            self.log.error("This daemon was declared lost; its tasks were recovered elsewhere")
            # Its tasks, started or not, now belong to other daemons: run none of them.
            self._drop_held(self._kill_running("declared lost"))
            workers.register_worker(server_id, self.instance)
        self._kill_silent()
        self._act_on_kill_requests()
        # After an outage every heartbeat is old; wait one WORKER_TIMEOUT of our own
        # uptime before judging others, so their heartbeats have had time to resume.
        if time.monotonic() - self.db_up_since >= settings.WORKER_TIMEOUT:
            for entry in tracker.recover_lost_workers(settings.WORKER_TIMEOUT):
                self.log.warning("Recovered %s from a lost daemon: %s", entry.name, entry.action)
        if self.broker is not None:
            self.broker.beat(active=len(self.pool.in_flight()), processed=self.processed)

    def _drop_held(self, attempts) -> None:
        """Forget attempts withdrawn from the pool that will never be reported."""
        for attempt in attempts:
            if self.holding.get(attempt.task_id) == attempt.number:
                del self.holding[attempt.task_id]

    def _reconcile(self) -> None:
        """Give back the tasks the database says this daemon runs but its pool does not hold.

        Runs at start and after every outage. A claim whose COMMIT reached the database but
        whose reply was lost leaves RUNNING tasks no handler runs; so does an earlier
        process that ran under this server id. Each is handled under its row lock and only
        while still this daemon's: given back unused (it never started) after an outage, or
        by the lost-attempt rule at start (the earlier process may have run it).
        """
        # The first one (at start) may meet the attempts of an earlier process that ran them.
        entries = tracker.reclaim_orphans(
            self.options.server_id, dict(self.holding), ran=not self.reconciled
        )
        self.reconcile_due, self.reconciled = False, True
        for entry in entries:
            self.log.warning("%s was not in this daemon's pool: %s", entry.name, entry.action)

    def _kill_silent(self) -> None:
        """Kill handlers silent for longer than their type's timeout (``atp.daemon.limits``)."""
        quiet_from = timezone.now() - timedelta(seconds=time.monotonic() - self.db_up_since)
        for slot, quiet in silent_slots(self.pool.in_flight(), quiet_from):
            reason = silence_reason(slot.attempt.timeout, quiet)
            self.log.warning("Killing task %d: %s", slot.attempt.task_id, reason)
            self.pool.kill(slot.attempt.task_id, signal.SIGKILL, reason)

    def _act_on_kill_requests(self) -> None:
        """Terminate handlers whose tasks were revoked with ``terminate`` (atp.control)."""
        running = {slot.attempt.task_id: slot for slot in self.pool.in_flight()}
        requests = TaskInstance.objects.claimed_by(self.options.server_id).filter(
            kill_signal__isnull=False
        )
        for task_id, signum in requests.values_list("id", "kill_signal"):
            if task_id in running and not running[task_id].kill_reason:
                self.log.info("Terminating task %d with signal %d (revoked)", task_id, signum)
                self.pool.kill(task_id, signum, "revoked")

    def _idle_cleanup(self) -> None:
        if time.monotonic() >= self.next_idle_cleanup:
            self.next_idle_cleanup = time.monotonic() + self.options.poll_interval
            if self._cleanup():
                self.queue_empty = False  # zombies went back to the queue

    def _cleanup(self) -> int:
        """The seed's sweeps: zombie re-enqueue, then retention. Returns zombies handled."""
        self.since_cleanup = 0
        self.next_sweep = time.monotonic() + settings.HEARTBEAT_INTERVAL
        zombies = tracker.reenqueue_zombie_tasks("Swept by atpd.")
        for entry in zombies:
            self.log.warning("Zombie %s: %s", entry.name, entry.action)
        if self.retention is None:
            self.retention = tracker.retired_task_deletions(
                min(RETENTION_BATCH, settings.CLEANUP_BATCH_SIZE)
            )
            self.retention_deleted = 0
        self._sweep_retired()
        for entry in subtasks.settle_waiting_parents():
            self.log.warning("Parent %s %s: its subtasks had all ended", entry.name, entry.action)
        released = tracker.decide_orphaned_dependents()
        if released:
            self.log.warning("Decided %d blocked task(s) whose dependencies were deleted", released)
        return len(zombies) + released

    def _sweep_retired(self) -> None:
        """Delete retired tasks for about ``RETENTION_SLICE``; the next loops go on with it."""
        deadline = time.monotonic() + RETENTION_SLICE
        try:
            while time.monotonic() < deadline:
                batch = next(self.retention)  # type: ignore[arg-type]  # set by _cleanup
                self.retention_deleted += len(batch)
                for entry in batch:  # each task only at DEBUG: a sweep may delete a million
                    self.log.debug("Deleted retired task %s", entry.name)
        except StopIteration:
            if self.retention_deleted:
                self.log.info("Deleted %d retired task(s)", self.retention_deleted)
            self.retention = None
        except BaseException:
            self.retention = None  # a failed batch rolled back; the next sweep starts anew
            raise

    # --- periodic tasks ------------------------------------------------------------------

    def _sync_schedules(self) -> None:
        """Make the schedules match ``ATP["SCHEDULES"]`` (a bad entry stops the start)."""
        saved, removed = schedules.sync_declared_schedules()
        if saved or removed:
            self.log.info(
                "Schedules from settings: %d synced, %d removed", len(saved), len(removed)
            )

    def _tick_schedules(self) -> None:
        """Enqueue the runs of due schedule slots (every daemon ticks; none leads)."""
        if self.schedules.tick():
            self.queue_empty = False  # a run waits: claim it now rather than at the next poll

    # --- waiting ------------------------------------------------------------------------

    def _wait(self) -> None:
        if self.db_down_since is None and self.listener.ensure():
            self.queue_empty = False  # what was notified while it was down is lost: look
        now = time.monotonic()
        can_claim = self.pool.free() and not self.stopping and not self._quota_used()
        retrying = self.db_down_since is not None or now < self.db_retry_at
        if not retrying and self._db_step_due():
            return  # more work may be waiting right now, or outcomes to record
        if self._finished():
            return
        wake_at = self._next_deadline()
        if retrying:
            # Timers that need the database wait for the next retry, or the loop would spin.
            wake_at = min(wake_at, max(self.db_retry_at, now + 0.01))
        else:
            wake_at = min(wake_at, self.next_heartbeat, self.schedules.due_at)
            if can_claim:
                wake_at = min(wake_at, self.next_poll)
            # A LISTEN connection that died is opened again (atp.daemon.wakeup).
            wake_at = min(wake_at, self.listener.reconnect_at())
            if self.retention is not None:
                wake_at = now  # the next slice of the sweep, once the wake-ups are read
        handles = self.pool.wait_handles() + self.listener.handles() + [self._wake_reader]
        ready = multiprocessing.connection.wait(handles, max(0.0, wake_at - now))
        if self._wake_reader in ready:
            os.read(self._wake_reader, 64)
        if self.listener.raw is not None and self.listener.raw in ready:
            if self.listener.drain():
                self.queue_empty = False
        if time.monotonic() >= self.next_poll:
            self.queue_empty = False

    def _sleep_until(self, moment: float) -> None:
        time.sleep(max(0.05, moment - time.monotonic()))
        if self.stopping:
            raise SystemExit(0)
