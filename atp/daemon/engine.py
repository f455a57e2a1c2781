"""The atpd engine: claims tasks from the database queue and runs their handlers in a pool.

One loop, one thread: collect what the pool reports, record it, enforce time limits,
heartbeat, sweep, claim as many tasks as there are free slots, then sleep until a child
reports, a task is enqueued (LISTEN/NOTIFY), a signal arrives or a timer is due. Every
database step tolerates the database going away: the step is retried with backoff, and
outcomes not yet recorded are kept until it is back.
"""

import logging
import multiprocessing.connection
import os
import signal
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from django.db import DatabaseError, transaction
from django.utils import timezone

from atp import discovery, events, schedules, tracker
from atp.conf import DB_RETRY_MAX_BACKOFF, settings
from atp.daemon import workers
from atp.daemon.asyncio_pool import AsyncioPool
from atp.daemon.db import drop_all, use_persistent_connections
from atp.daemon.limits import SILENT, silence_reason, silent_slots
from atp.daemon.pool import Crashed, Finished, ProcessPool
from atp.daemon.runner import record_all
from atp.daemon.schedules import ScheduleClock
from atp.daemon.thread_pool import ThreadPool
from atp.daemon.wakeup import Listener
from atp.exceptions import InvalidTransition, StaleAttempt, TaskNotFound
from atp.models import TaskInstance
from atp.tracker import subtasks

if TYPE_CHECKING:  # imported at run time only with a broker: Celery is optional
    from atp.daemon.broker import BrokerLinks

logger = logging.getLogger("atp.daemon")

#: Errors that end one task's bookkeeping step but not the daemon: the task moved on.
TASK_GONE = (StaleAttempt, InvalidTransition, TaskNotFound)
POOLS: dict[str, type[ProcessPool] | type[ThreadPool] | type[AsyncioPool]] = {
    "processes": ProcessPool,
    "threads": ThreadPool,
    "asyncio": AsyncioPool,
}
MAX_BACKOFF = DB_RETRY_MAX_BACKOFF


def _exception_of(kill_reason: str) -> str:
    """The exception a crashed attempt is recorded with: why its handler stopped."""
    if not kill_reason:
        return "WorkerLostError"
    return "TimeoutError" if kill_reason.startswith(SILENT) else "TimeLimitExceeded"


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
        self.pending: list = []  # pool reports not yet recorded
        self.claimed_total = 0
        self.processed = 0
        self.since_cleanup = 0
        self.queue_empty = False
        self.soft_signalled: set[int] = set()
        now = time.monotonic()
        self.next_poll = self.next_heartbeat = self.next_idle_cleanup = self.next_sweep = now
        self.db_down_since: float | None = None
        self.db_retry_at = 0.0
        self.db_up_since = now
        self._wake_reader, self._wake_writer = os.pipe()
        # Event relay + remote control, if a broker is configured (atp.daemon.broker).
        self.broker: BrokerLinks | None = None
        self.paused: list[str] = []  # the paused queues as last read (atp.tracker.pausing)
        self.paused_read_at = float("-inf")
        self.schedules = ScheduleClock()  # when to tick the periodic tasks (atp.schedules)

    # --- life cycle ---------------------------------------------------------------------

    def run(self) -> int:
        """Serve the queue until stopped (or, with ``burst``, until it is empty); return 0."""
        use_persistent_connections()
        # Before the pool starts: its children inherit the name they send events under.
        events.set_node_name(events.daemon_node_name(self.options.server_id))
        self.pool = POOLS[self.options.pool](self.options.concurrency)
        previous = self._install_signal_handlers()
        try:
            while not self._db(lambda: workers.register_worker(self.options.server_id)):
                self._sleep_until(self.db_retry_at)
            while not self._db(self._sync_schedules):
                self._sleep_until(self.db_retry_at)
            self._db(self._sync_task_types)  # if the database fails here, enqueues do it
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
                self._step()
        finally:
            self._shut_down(previous)
        self.log.info("atpd stopped after %d task(s)", self.processed)
        return 0

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

    def _step(self) -> None:
        if self.stopping != self.stop_announced:
            self._announce_stop()
        if self.stopping == "cold":
            self._stop_cold()
        reports = self.pool.collect()
        if reports:
            self.pending += reports
            self.queue_empty = False  # a finished task may have re-enqueued work
        self._enforce_time_limits()
        now = time.monotonic()
        if now >= self.next_heartbeat:
            self._db(self._heartbeat)
        # Every CLEANUP_EVERY dequeues, but not more often than heartbeats: at thousands of
        # tasks a second the sweeps would otherwise run several times a second for nothing.
        if self.since_cleanup >= settings.CLEANUP_EVERY and now >= self.next_sweep:
            self._db(self._cleanup)
        if now >= self.schedules.due_at:
            self._db(self._tick_schedules)
        if self._db_step_due():
            self._db(self._record_and_claim)
        self._wait()

    def _db_step_due(self) -> bool:
        """Whether recording and claiming is worth a commit now.

        Every step costs a commit, so while the pool is well stocked with prefetched work
        the daemon lets outcomes pile up and records them (and claims the next batch) once
        the pool runs low: large batches, few commits. With nothing more to claim, or when
        stopping, outcomes are recorded at once.
        """
        hungry = self.pool.hungry()
        if hungry and self._claim_size():
            return True
        return bool(self.pending) and bool(hungry or self.stopping or self.queue_empty)

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
        try:
            os.write(self._wake_writer, b"s")
        except BlockingIOError:
            pass

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

    def request_stop(self) -> None:
        """Warm stop asked from another thread (remote control's ``shutdown``)."""
        if not self.stopping:
            self._on_stop_signal(signal.SIGTERM, None)

    def _shut_down(self, previous_handlers: dict) -> None:
        if self.stopping == "cold" or self.pool.busy():
            self._cold_stop()
        self.pool.stop()
        self.listener.close()
        self._db(lambda: workers.stop_worker(self.options.server_id))
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
            self._db(self._record_and_claim)  # claims nothing: stopping
            time.sleep(0.05)

    # --- the database -------------------------------------------------------------------

    def _db(self, step) -> bool:
        """Run one database step; on a connection error, note the outage and back off.

        Returns whether the step ran. While the database is away every step is skipped
        until the backoff expires; the loop itself keeps serving the pool.
        """
        if self.db_down_since is not None and time.monotonic() < self.db_retry_at:
            return False
        try:
            step()
        except DatabaseError as exc:  # unreachable, restarting, or (SQLite) locked
            now = time.monotonic()
            if self.db_down_since is None:
                self.db_down_since = now
                self.log.error("Database unavailable, retrying with backoff: %s", exc)
            backoff = min(MAX_BACKOFF, 0.25 * 2 ** min(6, (now - self.db_down_since)))
            self.db_retry_at = now + backoff
            drop_all()
            self.listener.close()
            return False
        if self.db_down_since is not None:
            self.log.warning("Database back after %.1f s", time.monotonic() - self.db_down_since)
            self.db_down_since = None
            self.db_up_since = time.monotonic()
            self.queue_empty = False
            self.listener.connect()
        return True

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
            self.paused, self.paused_read_at = tracker.paused_queues(), now
        return self.paused

    def _claim_size(self) -> int:
        """How many tasks to claim now: the free slots, within ``--max-tasks``."""
        if self.stopping or self.queue_empty:
            return 0
        free = self.pool.free()
        if self.options.max_tasks is not None:
            free = min(free, self.options.max_tasks - self.claimed_total)
        return max(0, free)

    def _record_and_claim(self) -> None:
        """Record the collected outcomes and claim the next batch, in one transaction.

        One commit per loop, whatever the batch sizes. Claiming and starting together
        (``tracker.claim_tasks``) leaves no window in which this daemon holds a claimed task
        it has not started. Reports leave ``pending`` only after the commit, so an outage in
        the middle loses none of them: they are recorded again once the database is back.
        """
        batch, claim = list(self.pending), self._claim_size()
        with transaction.atomic():
            lines = self._record(batch) if batch else []
            attempts = (
                tracker.claim_tasks(
                    self.options.server_id,
                    limit=claim,
                    queues=self.options.queues,
                    limited=self.pool.idle(),  # concurrency-limited tasks: idle slots only
                    paused_queues=self._paused_queues(),
                )
                if claim
                else []
            )
        del self.pending[: len(batch)]
        self.processed += len(batch)
        for level, message, args in lines:
            self.log.log(level, message, *args)
        if claim and not attempts:
            self.queue_empty = True
            self.next_poll = time.monotonic() + self.options.poll_interval
            self._idle_cleanup()
        self.claimed_total += len(attempts)
        self.since_cleanup += len(attempts)
        # Limited attempts first, so they take the idle slots they were claimed for instead
        # of queueing behind other work while holding a place of their concurrency key.
        attempts.sort(key=lambda attempt: not attempt.limited)
        self.pool.submit_many(attempts)  # only now: the children must see the committed rows
        for attempt in attempts:
            self.log.info(
                "Started %s::%s (id %d, attempt %d)",
                attempt.type,
                attempt.identifier,
                attempt.task_id,
                attempt.number,
            )

    # --- outcomes -----------------------------------------------------------------------

    def _record(self, batch) -> list[tuple]:
        """Write a batch of pool reports through the tracker; return their log lines."""
        lines = []
        finished = [report for report in batch if isinstance(report, Finished)]
        results = record_all([report.outcome for report in finished])
        for report, result in zip(finished, results, strict=True):
            lines.append(self._describe(report.attempt, report.outcome, result))
        for report in batch:
            if isinstance(report, Crashed):
                lines.append(self._record_crash(report))
        return lines

    def _describe(self, attempt, outcome, result) -> tuple:
        """The log line for a recorded outcome."""
        self.soft_signalled.discard(outcome.task_id)
        name = f"{attempt.type}::{attempt.identifier} (id {attempt.task_id})"
        if result == "failed":
            return logging.INFO, "Failed %s: %s", (name, outcome.message)
        if result == "lost":
            return logging.WARNING, "%s was taken away while it ran: %s", (name, outcome.message)
        return logging.INFO, "%s %s in %.3f s", (name, result.capitalize(), outcome.runtime)

    def _record_crash(self, crash: Crashed) -> tuple:
        attempt = crash.attempt
        self.soft_signalled.discard(attempt.task_id)
        name = f"{attempt.type}::{attempt.identifier} (id {attempt.task_id})"
        try:
            if crash.kill_reason == "revoked":
                tracker.revoke_task(
                    attempt.task_id,
                    f"Terminated on request: the handler was {crash.reason}.",
                    terminated=True,
                    signum=crash.kill_signal,
                )
                return logging.INFO, "Revoked %s: handler terminated", (name,)
            if crash.kill_reason == "cold stop":
                tracker.reenqueue_task(
                    attempt.task_id,
                    f"Re-enqueued: atpd cold stop (the handler {crash.reason}).",
                    attempt=attempt.number,
                )
                return logging.INFO, "Re-enqueued %s after cold stop", (name,)
            cause = crash.kill_reason or f"the handler's process {crash.reason}"
            action = tracker.restart_or_fail(
                attempt.task_id,
                f"Attempt {attempt.number} ended: {cause}.",
                attempt=attempt.number,
                exception=_exception_of(crash.kill_reason),
            )
            return logging.WARNING, "%s %s: %s", (name, action, cause)
        except TASK_GONE as exc:
            return logging.WARNING, "%s: outcome not recorded: %s", (name, exc)

    # --- time limits --------------------------------------------------------------------

    def _enforce_time_limits(self) -> None:
        """The wall-clock limits: soft (SIGUSR1), hard (SIGKILL). Timeout: ``_kill_silent``."""
        now = time.monotonic()
        for slot in self.pool.in_flight():
            attempt, elapsed = slot.attempt, now - slot.started
            if slot.kill_reason:
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
        running = [slot for slot in self.pool.in_flight() if not slot.kill_reason]
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
        return min(deadlines, default=float("inf"))

    # --- heartbeats, liveness, sweeps ---------------------------------------------------

    def _heartbeat(self) -> None:
        """Beat, kill silent handlers, act on kill requests, recover daemons that died."""
        self.next_heartbeat = time.monotonic() + settings.HEARTBEAT_INTERVAL
        server_id = self.options.server_id
        if not workers.beat(server_id):
            self.log.error("This daemon was declared lost; its tasks were recovered elsewhere")
            # Its tasks, started or not, now belong to other daemons: run none of them.
            self._kill_running("declared lost")
            workers.register_worker(server_id)
        self._kill_silent()
        self._act_on_kill_requests()
        # After an outage every heartbeat is old; wait one WORKER_TIMEOUT of our own
        # uptime before judging others, so their heartbeats have had time to resume.
        if time.monotonic() - self.db_up_since >= settings.WORKER_TIMEOUT:
            for entry in tracker.recover_lost_workers(settings.WORKER_TIMEOUT):
                self.log.warning("Recovered %s from a lost daemon: %s", entry.name, entry.action)
        if self.broker is not None:
            self.broker.beat(active=len(self.pool.in_flight()), processed=self.processed)

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
        for entry in tracker.delete_retired_tasks():
            self.log.info("Deleted retired task %s", entry.name)
        for entry in subtasks.settle_waiting_parents():
            self.log.warning("Parent %s %s: its subtasks had all ended", entry.name, entry.action)
        released = tracker.decide_orphaned_dependents()
        if released:
            self.log.warning("Decided %d blocked task(s) whose dependencies were deleted", released)
        return len(zombies) + released

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
        if self.db_down_since is None and self._db_step_due():
            return  # more work may be waiting right now, or outcomes to record
        if self._finished():
            return
        wake_at = self._next_deadline()
        if self.db_down_since is not None:
            # Timers that need the database wait for the next retry, or the loop would spin.
            wake_at = min(wake_at, self.db_retry_at)
        else:
            wake_at = min(wake_at, self.next_heartbeat, self.schedules.due_at)
            if can_claim:
                wake_at = min(wake_at, self.next_poll)
            # A LISTEN connection that died is opened again (atp.daemon.wakeup).
            wake_at = min(wake_at, self.listener.reconnect_at())
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
