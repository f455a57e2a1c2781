"""``atpd --pool asyncio -n 100``: up to ``n`` async handlers at once on one event loop.

One thread of the daemon runs an event loop; each attempt becomes an asyncio task on it,
so a hundred handlers waiting on I/O cost a hundred coroutines, not a hundred processes
or threads. They share ``ATP['ASYNC_DB_THREADS']`` database connections: ``TaskStatus``'s
``a``-methods send their ORM calls to that many threads (``atp.daemon.asyncrun``), never
one connection per handler. The daemon's own loop (claims, outcomes, heartbeats) keeps its
one connection in the main thread, as with the other pools.

- **Sync handlers are refused**: a handler that is not ``async def`` would stop every other
  handler on the loop while it runs, and would need a connection of its own. Its attempt
  fails at once with ``SyncHandlerRefused`` naming the handler; serve such types from
  ``--pool processes`` or ``threads`` daemons (``--queues`` separates them).
- **Time limits and revoke/terminate** cancel the handler's asyncio task (``task.cancel()``):
  the handler gets ``CancelledError`` at its current ``await``. At the soft limit the
  attempt ends with ``SoftTimeLimitExceeded``; at the hard limit, or revoked with
  ``terminate``, it is reported as killed at once and the slot is free. A handler that
  swallows the cancellation is abandoned like a thread (its late writes are refused by
  fencing).
"""

import asyncio
import collections
import logging
import os
import threading
import time

from atp.conf import settings
from atp.daemon import asyncrun
from atp.daemon.pool import Crashed, Finished, Slot, _SlotPool
from atp.daemon.runner import execute_async
from atp.tracker import Attempt

logger = logging.getLogger("atp.daemon")


class AsyncioPool(_SlotPool):
    """``size`` handler slots as asyncio tasks on one event loop thread (see module doc)."""

    def __init__(self, size: int):
        super().__init__(size)
        self.slots = [Slot() for _ in range(size)]
        self._waiting: collections.deque = collections.deque()  # claimed, not started
        self._lock = threading.Lock()  # guards _waiting, _reports and the slots' queues
        self._reports: list = []
        self._written_off: set[tuple[int, int]] = set()
        self._running: dict[int, asyncio.Task] = {}  # id(slot) -> the asyncio task running in it
        self._wake_reader, self._wake_writer = os.pipe()
        os.set_blocking(self._wake_reader, False)
        os.set_blocking(self._wake_writer, False)
        self._executor = asyncrun.db_executor()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="atpd-asyncio", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    @property
    def depth(self) -> int:
        """Attempts a slot may hold: at least 2 (one running, one claimed behind it) for
        handlers under a second, more for very short ones (as the other pools: about
        ``PREFETCH_HORIZON`` of work per slot, at most ``ATP['PREFETCH']``).

        A waiting attempt costs nothing here (no process, no connection), and it lets the
        daemon claim half the pool's room in one transaction instead of one task per
        finished handler: 100 handlers ending together make one claim, not 100; a few slots
        of sub-millisecond handlers claim dozens of tasks per transaction, not a few.
        Handlers of a second or more (or ``ATP['PREFETCH'] = 1``) keep it at 1, so no task
        waits RUNNING behind a long one.
        """
        if settings.PREFETCH == 1 or self.mean_runtime is None or self.mean_runtime >= 1.0:
            return 1
        return max(2, super().depth)

    # --- the daemon's side (main thread) -------------------------------------------------

    def submit_many(self, attempts) -> None:
        """Queue attempts; the loop starts them as slots free up, in order."""
        attempts = list(attempts)
        if not attempts:
            return
        with self._lock:
            self.held += len(attempts)
            self._waiting.extend(attempts)
        self._loop.call_soon_threadsafe(self._dispatch)

    def wait_handles(self) -> list:
        """The wake-up pipe the loop writes to when handlers end."""
        return [self._wake_reader]

    def collect(self) -> list:
        """Reports of handlers that ended (or were cancelled) since the last call."""
        try:
            os.read(self._wake_reader, 4096)
        except BlockingIOError:
            pass
        with self._lock:
            reports, self._reports = self._reports, []
        for report in reports:
            if isinstance(report, Finished):
                self._reported(report.outcome)
            else:
                self.held -= 1  # a killed handler (see kill)
        return reports

    def in_flight(self) -> list[Slot]:
        """The slots whose handler runs now."""
        with self._lock:
            return [slot for slot in self.slots if slot.queue]

    def kill(self, task_id: int, signum: int, reason: str) -> bool:
        """Cancel the handler of ``task_id`` and report it killed; False if none runs it."""
        with self._lock:
            for index, slot in enumerate(self.slots):
                attempt = slot.attempt
                if attempt is None or attempt.task_id != task_id:
                    continue
                slot.abandoned = True
                self.slots[index] = Slot()
                # ``held`` drops when collect() hands the report over, not now: until then
                # the pool is busy, so a --burst daemon cannot exit with it unrecorded.
                self._written_off.add((attempt.task_id, attempt.number))
                self._reports.append(
                    Crashed(attempt, "cancelled (asyncio task.cancel())", reason, signum)
                )
                handle = self._running.pop(id(slot), None)
                break
            else:
                return False
        if handle is not None:
            self._loop.call_soon_threadsafe(handle.cancel)
        self._loop.call_soon_threadsafe(self._dispatch)
        self._poke()
        return True

    def withdraw(self, reason: str) -> list[Attempt]:
        """Take back every attempt not started yet."""
        with self._lock:
            withdrawn, self._waiting = list(self._waiting), collections.deque()
            self.held -= len(withdrawn)
        if withdrawn:
            logger.info("Withdrew %d attempt(s) not yet started: %s", len(withdrawn), reason)
        return withdrawn

    def unstarted(self) -> list[Attempt]:
        """The attempts waiting for a free slot."""
        with self._lock:
            return list(self._waiting)

    def take_back(self, task_ids) -> list[Attempt]:
        """Take the attempts of ``task_ids`` that wait for a slot (see the base class)."""
        ids = set(task_ids)
        with self._lock:
            taken = [attempt for attempt in self._waiting if attempt.task_id in ids]
            self._waiting = collections.deque(a for a in self._waiting if a.task_id not in ids)
            self.held -= len(taken)
        return taken

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel what still runs, stop the loop and its thread, close the database threads."""

        def shut():
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.stop()

        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(shut)
            self._thread.join(timeout)
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- the loop's side ------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Start waiting attempts in free slots (runs on the loop)."""
        with self._lock:
            for slot in self.slots:
                if not self._waiting:
                    break
                if slot.queue:
                    continue
                attempt = self._waiting.popleft()
                slot.queue.append(attempt)
                slot.started = time.monotonic()
                self._running[id(slot)] = self._loop.create_task(self._run(slot, attempt))

    async def _run(self, slot: Slot, attempt: Attempt) -> None:
        try:
            outcome = await execute_async(attempt, self._executor)
        except asyncio.CancelledError:
            return  # killed: kill() reported it already
        with self._lock:
            slot.queue.clear()
            self._running.pop(id(slot), None)
            key = (attempt.task_id, attempt.number)
            # One wake-up per batch of reports, as in the thread pool: ``collect`` takes them
            # all, and the first report after it always finds the list empty and wakes the
            # daemon. A wake-up per report made the loop and the daemon trade the GIL for
            # every task.
            wake = not self._reports
            if key in self._written_off:  # a cancelled handler that finished after all
                self._written_off.discard(key)
                wake = False
            else:
                self._reports.append(Finished(attempt, outcome))
        if wake:
            self._poke()
        self._dispatch()

    def _poke(self) -> None:
        try:
            os.write(self._wake_writer, b"x")
        except BlockingIOError:
            pass
