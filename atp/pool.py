"""Where handlers run: a pre-forked pool of child processes, or a pool of threads.

Both pools have the same small interface, so the daemon's loop does not care which runs:
``free``, ``submit``, ``wait_handles``, ``collect``, ``kill``, ``in_flight``, ``stop``.
``collect`` returns ``Finished`` (the handler returned or raised) and ``Crashed`` (the child
died, or was killed by the daemon) reports.
"""

import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass, field

from atp.runner import Outcome, execute
from atp.tracker import Attempt

logger = logging.getLogger("atp.daemon")


@dataclass
class Slot:
    """One place a handler can run, and the attempt it runs now (if any)."""

    attempt: Attempt | None = None
    started: float = 0.0  # time.monotonic() at submit
    kill_reason: str = ""  # set when the daemon killed the handler on purpose
    kill_signal: int = 0
    process: multiprocessing.Process | None = None
    pipe: object = None
    thread: threading.Thread | None = None
    inbox: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)


@dataclass(frozen=True)
class Finished:
    """The handler of ``attempt`` returned or raised; ``outcome`` says which."""

    attempt: Attempt
    outcome: Outcome


@dataclass(frozen=True)
class Crashed:
    """The handler's process died before reporting: killed on purpose, or it crashed."""

    attempt: Attempt
    reason: str
    kill_reason: str
    kill_signal: int


def describe_exit(exitcode: int | None) -> str:
    """Say how a child process ended, naming the signal if it was one."""
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


class _SlotPool:
    """The slot bookkeeping both pools share; subclasses say how an attempt reaches a slot."""

    slots: list[Slot]

    def free(self) -> int:
        """Number of idle slots."""
        return sum(slot.attempt is None for slot in self.slots)

    def in_flight(self) -> list[Slot]:
        """The busy slots."""
        return [slot for slot in self.slots if slot.attempt is not None]

    def _occupy(self, attempt: Attempt) -> Slot:
        """Mark an idle slot busy with ``attempt`` and return it."""
        slot = next(slot for slot in self.slots if slot.attempt is None)
        slot.attempt, slot.started = attempt, time.monotonic()
        return slot


class ProcessPool(_SlotPool):
    """Handlers in long-lived child processes, forked from a clean forkserver.

    The forkserver never opens a database connection, so no child inherits one (a
    connection shared across a fork corrupts both ends). Each child runs many tasks on
    its own persistent connection; a child that dies is replaced.
    """

    def __init__(self, size: int):
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(["atp._forkserver_preload"])
        # The children hold the reading end; when this process dies, however it dies, the
        # end closes and they exit (see atp.child._die_with_daemon).
        self._alive_reader, self._alive_writer = self.context.Pipe(duplex=False)
        self.slots = [self._start(Slot()) for _ in range(size)]

    def _start(self, slot: Slot) -> Slot:
        from atp import child

        ours, theirs = self.context.Pipe()
        process = self.context.Process(
            target=child.main, args=(theirs, self._alive_reader), name="atpd-child", daemon=True
        )
        process.start()
        theirs.close()
        slot.process, slot.pipe = process, ours
        slot.attempt, slot.kill_reason, slot.kill_signal = None, "", 0
        return slot

    def submit(self, attempt: Attempt) -> None:
        """Send an attempt to an idle child."""
        self._occupy(attempt).pipe.send(attempt)

    def wait_handles(self) -> list:
        """What to pass to ``multiprocessing.connection.wait``: result pipes and death sentinels."""
        return [slot.pipe for slot in self.slots] + [slot.process.sentinel for slot in self.slots]

    def collect(self) -> list:
        """Reports of handlers that ended since the last call; dead children are replaced."""
        reports = []
        for slot in self.slots:
            if slot.attempt is not None and slot.pipe.poll():
                try:
                    reports.append(Finished(slot.attempt, slot.pipe.recv()))
                    slot.attempt, slot.kill_reason, slot.kill_signal = None, "", 0
                    continue
                except (EOFError, OSError):
                    pass  # it died while reporting: handled as a crash below
            if not slot.process.is_alive():
                slot.process.join()
                reason = describe_exit(slot.process.exitcode)
                if slot.attempt is not None:
                    reports.append(
                        Crashed(slot.attempt, reason, slot.kill_reason, slot.kill_signal)
                    )
                else:
                    logger.warning("Idle pool child %s; replacing it", reason)
                slot.pipe.close()
                self._start(slot)
        return reports

    def kill(self, task_id: int, signum: int, reason: str) -> bool:
        """Send ``signum`` to the child running ``task_id``; False if none runs it."""
        for slot in self.slots:
            if slot.attempt is not None and slot.attempt.task_id == task_id:
                slot.kill_reason, slot.kill_signal = reason, signum
                try:
                    os.kill(slot.process.pid, signum)
                except ProcessLookupError:
                    pass
                return True
        return False

    def stop(self, timeout: float = 5.0) -> None:
        """Ask idle children to exit, wait briefly, then kill any that remain."""
        for slot in self.slots:
            try:
                slot.pipe.send(None)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + timeout
        for slot in self.slots:
            slot.process.join(max(0.0, deadline - time.monotonic()))
            if slot.process.is_alive():
                slot.process.kill()
                slot.process.join()


class ThreadPool(_SlotPool):
    """Handlers in threads of the daemon's process, for I/O-bound work.

    A thread cannot be killed: a handler past its hard limit is abandoned (its task is
    restarted elsewhere, and fencing refuses its late writes) and its slot gets a new thread.
    """

    def __init__(self, size: int):
        self._reports: queue.SimpleQueue = queue.SimpleQueue()
        self._abandoned: list[Crashed] = []
        self._wake_reader, self._wake_writer = os.pipe()
        os.set_blocking(self._wake_reader, False)
        os.set_blocking(self._wake_writer, False)
        self.slots = [self._start(Slot()) for _ in range(size)]

    def _start(self, slot: Slot) -> Slot:
        slot.inbox = queue.SimpleQueue()
        slot.thread = threading.Thread(
            target=self._serve, args=(slot.inbox,), name="atpd-thread", daemon=True
        )
        slot.attempt, slot.kill_reason, slot.kill_signal = None, "", 0
        slot.thread.start()
        return slot

    def _serve(self, inbox: queue.SimpleQueue) -> None:
        from django.db import connection

        from atp.db import heal

        while (attempt := inbox.get()) is not None:
            heal()
            self._reports.put((inbox, execute(attempt)))
            self._wake()
        connection.close()

    def _wake(self) -> None:
        try:
            os.write(self._wake_writer, b"x")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already

    def submit(self, attempt: Attempt) -> None:
        """Hand an attempt to an idle thread."""
        self._occupy(attempt).inbox.put(attempt)

    def wait_handles(self) -> list:
        """The wake-up pipe the threads write to when they finish."""
        return [self._wake_reader]

    def collect(self) -> list:
        """Reports of handlers that ended since the last call."""
        try:
            os.read(self._wake_reader, 4096)
        except BlockingIOError:
            pass
        reports, self._abandoned = list(self._abandoned), []
        while True:
            try:
                inbox, outcome = self._reports.get_nowait()
            except queue.Empty:
                return reports
            slot = next((slot for slot in self.slots if slot.inbox is inbox), None)
            if slot is not None:  # else an abandoned thread: its attempt was already handled
                reports.append(Finished(slot.attempt, outcome))
                slot.attempt = None

    def kill(self, task_id: int, signum: int, reason: str) -> bool:
        """Abandon the thread running ``task_id`` (threads cannot be killed)."""
        for slot in self.slots:
            if slot.attempt is not None and slot.attempt.task_id == task_id:
                attempt = slot.attempt
                slot.inbox.put(None)  # the old thread exits after its handler returns
                self._start(slot)
                self._abandoned.append(
                    Crashed(attempt, "abandoned (a thread cannot be killed)", reason, signum)
                )
                self._wake()
                return True
        return False

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the threads to exit once their handlers return."""
        for slot in self.slots:
            slot.inbox.put(None)
        deadline = time.monotonic() + timeout
        for slot in self.slots:
            slot.thread.join(max(0.0, deadline - time.monotonic()))
