"""The thread pool: handlers in threads of the daemon's process, for I/O-bound work.

It shares the slots, reports and prefetch sizing of ``atp.daemon.pool`` with the process
pool, so the daemon's loop does not care which one runs.
"""

import logging
import os
import queue
import threading
import time

from atp.daemon.pool import Crashed, Finished, Slot, _SlotPool
from atp.daemon.runner import Outcome, execute, failure
from atp.tracker import Attempt

logger = logging.getLogger("atp.daemon")


class ThreadPool(_SlotPool):
    """Handlers in threads of the daemon's process, for I/O-bound work.

    The threads take attempts from one shared queue, so a slow handler holds up nothing
    behind it. A thread cannot be killed: a handler past its hard limit is abandoned (its
    task is restarted elsewhere, and fencing refuses its late writes) and its slot gets a
    new thread.
    """

    def __init__(self, size: int):
        super().__init__(size)
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._reports: list[tuple[Attempt, Outcome]] = []
        self._report_lock = threading.Lock()
        self._woken = False
        self._abandoned: list[Crashed] = []
        self._written_off: set[tuple[int, int]] = set()  # (task id, attempt) reported crashed
        self._wake_reader, self._wake_writer = os.pipe()
        os.set_blocking(self._wake_reader, False)
        os.set_blocking(self._wake_writer, False)
        self.slots = [self._start(Slot()) for _ in range(size)]

    def _start(self, slot: Slot) -> Slot:
        slot.thread = threading.Thread(
            target=self._serve, args=(slot,), name="atpd-thread", daemon=True
        )
        slot.thread.start()
        return slot

    def _serve(self, slot: Slot) -> None:
        from django.db import connection

        from atp.daemon.db import heal

        while (attempt := self._work.get()) is not None:
            # The slot's lock makes "take the next attempt" and "abandon this thread"
            # exclusive: an abandoned thread never starts another attempt.
            with slot.lock:
                if slot.abandoned:
                    self._work.put(attempt)
                    break
                slot.started = time.monotonic()
                slot.queue.append(attempt)
            try:
                heal()
                outcome = execute(attempt)
            except BaseException as exc:  # noqa: BLE001 - the last net: the thread serves on
                outcome = failure(attempt, exc)
            with slot.lock:
                slot.queue.clear()
            self._report(attempt, outcome)
        connection.close()

    def _report(self, attempt: Attempt, outcome: Outcome) -> None:
        """Hand an outcome to the daemon; wake it only if it has not been woken already.

        One wake-up per batch of reports, not per report: under load the daemon collects
        dozens at a time. The lock pairs with ``collect``: a report put after the daemon
        took the last batch always writes a new wake-up, so none is missed.
        """
        with self._report_lock:
            self._reports.append((attempt, outcome))
            wake, self._woken = not self._woken, True
        if wake:
            self._poke()

    def _poke(self) -> None:
        try:
            os.write(self._wake_writer, b"x")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already

    def submit_many(self, attempts) -> None:
        """Put attempts in the threads' shared queue, in order."""
        for attempt in attempts:
            self.held += 1
            self._work.put(attempt)

    def wait_handles(self) -> list:
        """The wake-up pipe the threads write to when they finish."""
        return [self._wake_reader]

    def collect(self) -> list:
        """Reports of handlers that ended since the last call."""
        try:
            os.read(self._wake_reader, 4096)
        except BlockingIOError:
            pass
        reports: list[Crashed | Finished] = list(self._abandoned)
        self._abandoned = []
        with self._report_lock:
            finished, self._reports, self._woken = self._reports, [], False
        for attempt, outcome in finished:
            key = (attempt.task_id, attempt.number)
            if key in self._written_off:  # an abandoned handler that returned after all
                self._written_off.discard(key)
                continue
            self._reported(outcome)
            reports.append(Finished(attempt, outcome))
        return reports

    def kill(self, task_id: int, signum: int, reason: str) -> bool:
        """Abandon the thread running ``task_id`` (threads cannot be killed)."""
        for index, slot in enumerate(self.slots):
            with slot.lock:
                attempt = slot.attempt
                if attempt is None or attempt.task_id != task_id:
                    continue
                slot.abandoned = True
            self.held -= 1
            self._written_off.add((attempt.task_id, attempt.number))
            self.slots[index] = self._start(Slot())
            self._abandoned.append(
                Crashed(attempt, "abandoned (a thread cannot be killed)", reason, signum)
            )
            self._poke()  # the daemon's next wait returns at once
            return True
        return False

    def withdraw(self, reason: str) -> list[Attempt]:
        """Take back every attempt no thread has started yet (``reason``: for the log)."""
        withdrawn = []
        while True:
            try:
                attempt = self._work.get_nowait()
            except queue.Empty:
                break
            if attempt is None:  # a stop request: leave it for the threads
                self._work.put(None)
                break
            withdrawn.append(attempt)
        self.held -= len(withdrawn)
        if withdrawn:
            logger.info("Withdrew %d attempt(s) not yet started: %s", len(withdrawn), reason)
        return withdrawn

    def unstarted(self) -> list[Attempt]:
        """The attempts in the shared queue: no thread has taken them yet."""
        items = self._drain()
        self._refill(items)
        return [attempt for attempt in items if attempt is not None]

    def take_back(self, task_ids) -> list[Attempt]:
        """Take the attempts of ``task_ids`` out of the shared queue (see the base class).

        A thread that took an attempt has begun it; one still in the queue never will be.
        """
        ids = set(task_ids)
        items = self._drain()
        taken = [item for item in items if item is not None and item.task_id in ids]
        self._refill([item for item in items if item is None or item.task_id not in ids])
        self.held -= len(taken)
        return taken

    def _drain(self) -> list:
        """Everything in the shared queue, in order (attempts and stop requests)."""
        items = []
        while True:
            try:
                items.append(self._work.get_nowait())
            except queue.Empty:
                return items

    def _refill(self, items) -> None:
        """Put ``items`` back in order; only this (the daemon's) thread ever puts."""
        for item in items:
            self._work.put(item)

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the threads to exit once their handlers return."""
        for _ in range(len(self.slots) + len(self._written_off)):  # abandoned threads too
            self._work.put(None)
        deadline = time.monotonic() + timeout
        for slot in self.slots:
            slot.thread.join(max(0.0, deadline - time.monotonic()))  # type: ignore[union-attr]
