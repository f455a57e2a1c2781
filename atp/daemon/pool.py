"""Where handlers run: a pre-forked pool of child processes (``ProcessPool``, here), or a
pool of threads (``atp.daemon.thread_pool.ThreadPool``), on the base they share.

Both pools have the same small interface, so the daemon's loop does not care which runs:
``free``, ``submit``, ``wait_handles``, ``collect``, ``kill``, ``in_flight``, ``busy``,
``withdraw``, ``unstarted``, ``take_back``, ``stop``. ``collect`` returns ``Finished`` (the
handler returned or raised) and ``Crashed`` (the child died, or was killed by the daemon)
reports.

Prefetch: every attempt the daemon claims costs a share of one database transaction, and
a transaction costs about a millisecond whatever its size. A pool that only took as many
attempts as it has slots would make the daemon commit once per handful of tasks, and
short handlers would wait on those commits. So a pool takes more attempts than it has
slots while its handlers are short: each slot may hold ``depth`` attempts, the running
one plus a few queued behind it, where ``depth`` is sized from the handlers' recent run
time so that a slot's queue holds about ``PREFETCH_HORIZON`` seconds of work (at most
``ATP['PREFETCH']``). Slow handlers make ``depth`` 1: a slot then holds only the attempt
it runs. The cost is bounded: a queued attempt is RUNNING in the database for at most
about ``PREFETCH_HORIZON`` before its handler is called.
"""

import collections
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from atp.conf import settings
from atp.daemon import child_setup
from atp.daemon.runner import Outcome
from atp.tracker import Attempt

logger = logging.getLogger("atp.daemon")

#: Seconds of work a slot's queue should hold when handlers are short (see module doc).
PREFETCH_HORIZON = 0.02
#: Bytes of pickled attempts a child's pipe may hold unread. Below the socket's buffer,
#: so sending to a busy child never blocks the daemon (which could deadlock with a child
#: blocked sending its outcome back). A bigger attempt waits until its child is idle.
PIPE_BUDGET = 32 * 1024
#: Frame header of an outcome on a child's result socket: the pickle's length.
REPORT_HEADER = struct.Struct("!I")
#: Weight of the newest run time in the running average that sizes ``depth``.
RUNTIME_WEIGHT = 0.2


#: Seconds the children of a new pool have to report that they set Django up.
START_TIMEOUT = 60.0
#: Longest wait for a child's fence (``ProcessPool.take_back``). A child holds it for a few
#: instructions between two attempts; one killed in there never lets go.
FENCE_WAIT = 1.0


class PoolStartError(RuntimeError):
    """The pool's child processes cannot start (their message says why)."""


@dataclass
class Slot:
    """One place a handler runs: its running attempt (the head of ``queue``) and those behind."""

    queue: collections.deque = field(default_factory=collections.deque)
    started: float = 0.0  # time.monotonic() when the head attempt started (about)
    kill_reason: str = ""  # set when the daemon killed the handler on purpose
    kill_signal: int = 0
    kill_target: int | None = None  # the task the kill was meant for
    killed_at: float = 0.0  # time.monotonic() of the kill
    escalated: bool = False  # a kill with a milder signal was followed by SIGKILL
    process: multiprocessing.Process | None = None
    pipe: multiprocessing.connection.Connection | None = None  # attempts, daemon → child
    results: socket.socket | None = None  # outcomes, child → daemon (see ProcessPool)
    received: bytearray = field(default_factory=bytearray)  # outcome bytes not yet parsed
    sizes: collections.deque = field(default_factory=collections.deque)  # pickled, per attempt
    thread: threading.Thread | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    abandoned: bool = False
    broken: bool = False  # a send to its child failed: the child died; collect replaces it
    # Taking back attempts already sent to a child (``ProcessPool.take_back``): the child
    # numbers the attempts it receives 1, 2, …; under ``fence`` it skips those up to
    # ``skip_upto`` and notes in ``began`` the one it begins. ``sent`` counts what the daemon
    # sent this child, ``head`` is the number of ``queue[0]``. ``fenced``: attempts taken
    # back still sit in its pipe, so nothing more is sent to it until its queue is empty
    # (which also keeps the queue's numbers consecutive).
    fence: Any = None
    began: Any = None
    skip_upto: Any = None
    sent: int = 0
    head: int = 1
    fenced: bool = False

    @property
    def attempt(self) -> Attempt | None:
        """The attempt whose handler runs in this slot now, if any."""
        try:
            return self.queue[0]
        except IndexError:
            return None


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
    """What both pools share: slots, the prefetch depth, and the count of held attempts."""

    slots: list[Slot]

    def __init__(self, size: int):
        self.size = size
        self.held = 0  # attempts submitted and not yet reported (or withdrawn)
        self.mean_runtime: float | None = None  # None until a handler has reported

    @property
    def depth(self) -> int:
        """Attempts a slot may hold now: 1 for slow handlers, up to ``ATP['PREFETCH']``."""
        limit = max(1, settings.PREFETCH)
        if self.mean_runtime is None or limit == 1:
            return 1
        return max(1, min(limit, int(PREFETCH_HORIZON / max(self.mean_runtime, 1e-6))))

    def free(self) -> int:
        """How many more attempts the pool takes now (its slots, plus prefetch)."""
        return max(0, self.size * self.depth - self.held)

    def submit(self, attempt: Attempt) -> None:
        """Take one attempt (see the pool's ``submit_many``)."""
        self.submit_many([attempt])  # type: ignore[attr-defined]

    def unstarted(self) -> list[Attempt]:
        """The attempts held that no handler has begun (prefetched), as far as is known."""
        raise NotImplementedError

    def take_back(self, task_ids) -> list[Attempt]:
        """Withdraw the held attempts of ``task_ids`` that have not begun; none of them will.

        Running handlers are not touched. The caller records what becomes of the returned
        attempts (the daemon gives their tasks back to the queue).
        """
        raise NotImplementedError

    def idle(self) -> int:
        """Slots with nothing to run: what a task of a concurrency-limited type may take.

        Such a task holds a place of its key from its claim, so it is never prefetched
        behind other work (``claim_tasks(limited=...)``, ``Attempt.limited``).
        """
        return max(0, self.size - self.held)

    def hungry(self) -> bool:
        """Whether the pool runs low: a slot is (about to be) idle, or half its room is free."""
        return self.held < self.size or 2 * self.free() >= self.size * self.depth

    def busy(self) -> bool:
        """Whether the pool holds any attempt, running or waiting to run."""
        return self.held > 0

    def in_flight(self) -> list[Slot]:
        """The slots whose handler runs now."""
        return [slot for slot in self.slots if slot.attempt is not None]

    def _reported(self, outcome: Outcome) -> None:
        """Count one reported attempt and fold its run time into the running average."""
        self.held -= 1
        if self.mean_runtime is None:
            self.mean_runtime = outcome.runtime
        else:
            self.mean_runtime += RUNTIME_WEIGHT * (outcome.runtime - self.mean_runtime)


class ProcessPool(_SlotPool):
    """Handlers in long-lived child processes, forked from a clean forkserver.

    The forkserver never opens a database connection, so no child inherits one (a
    connection shared across a fork corrupts both ends). Each child runs many tasks on
    its own persistent connection; a child that dies is replaced. Each child runs the
    attempts sent down its pipe in order, and reports each outcome on a socket of its own
    as a length-prefixed pickle (``atp.daemon.child.report``): the daemon reads every outcome that
    has arrived with one ``recv``, instead of two reads and a poll per outcome.
    """

    def __init__(self, size: int):
        super().__init__(size)
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(["atp.daemon.forkserver_preload"])
        # The children hold the reading end; when this process dies, however it dies, the
        # end closes and they exit (see atp.daemon.child._die_with_daemon).
        self._alive_reader, self._alive_writer = self.context.Pipe(duplex=False)
        self.waiting: collections.deque = collections.deque()  # (attempt, pickled), not sent
        self._starting: dict[int, Connection] = {}  # id(slot) → its child's start report pipe
        self._started = False  # every first child reported ready (replacements are not awaited)
        # Before the forkserver starts: it and the children read the daemon's settings.
        settings_file = child_setup.export_settings()
        try:
            self.slots = [self._start(Slot()) for _ in range(size)]
            self._await_started()
            self._started = True
        finally:
            # Read by the forkserver once, at its start (done now); it may hold secrets.
            if settings_file:
                os.unlink(settings_file)

    def _await_started(self) -> None:
        """Wait until every child reports that it set Django up; else raise PoolStartError.

        A child that cannot start would fail every attempt sent to it (and the daemon
        would burn each task's restarts on it): better to stop before claiming any.
        """
        deadline = time.monotonic() + START_TIMEOUT
        starting, self._starting = self._starting, {}
        problems = []
        for slot in self.slots:
            ready = starting.pop(id(slot))
            problem = None
            if not ready.poll(max(0.0, deadline - time.monotonic())):
                problem = f"no report from a child within {START_TIMEOUT:g} s"
            else:
                try:
                    problem = ready.recv()
                except (EOFError, OSError):
                    slot.process.join(1.0)
                    problem = f"a child {describe_exit(slot.process.exitcode)} before it was ready"
            ready.close()
            if problem is not None:
                problems.append(problem)
        if problems:
            for slot in self.slots:
                if slot.process.is_alive():
                    slot.process.kill()
                slot.process.join()
                slot.results.close()
            raise PoolStartError(
                f"the pool's child processes cannot start ({len(problems)} of "
                f"{len(self.slots)} failed): {problems[0]}"
            )

    def _start(self, slot: Slot) -> Slot:
        from atp.daemon import child

        ours, theirs = self.context.Pipe()
        results, their_results = socket.socketpair()
        ready, their_ready = self.context.Pipe(duplex=False)
        slot.fence, slot.sent, slot.head, slot.fenced = self.context.Lock(), 0, 1, False
        slot.began, slot.skip_upto = self.context.RawValue("q", 0), self.context.RawValue("q", 0)
        process = self.context.Process(
            target=child.main,
            args=(
                theirs,
                their_results,
                self._alive_reader,
                their_ready,
                (slot.fence, slot.began, slot.skip_upto),
            ),
            name="atpd-child",
            daemon=True,
        )
        process.start()
        theirs.close()
        their_results.close()
        their_ready.close()
        if self._started:
            ready.close()  # a replacement: nobody waits for its report
        else:
            self._starting[id(slot)] = ready
        results.setblocking(False)
        slot.process, slot.pipe, slot.results, slot.received = process, ours, results, bytearray()  # type: ignore[assignment]
        slot.kill_reason, slot.kill_signal, slot.kill_target = "", 0, None
        slot.escalated = False
        slot.broken = False
        return slot

    def submit_many(self, attempts) -> None:
        """Take attempts: each goes to a child at once if one has room, else waits here.

        All or nothing: every attempt is pickled before any is taken, so an attempt that
        cannot be pickled leaves the pool as it was (the daemon then tries them one by one).
        """
        pickled = [
            (attempt, pickle.dumps(attempt, pickle.HIGHEST_PROTOCOL)) for attempt in attempts
        ]
        self.held += len(pickled)
        self.waiting.extend(pickled)
        self._dispatch()

    def _dispatch(self) -> None:
        """Send waiting attempts to the children with the shortest queues that have room.

        What one child gets goes in one message: a list of pickled attempts.
        """
        depth = self.depth
        batches: dict[int, list[tuple[Attempt, bytes]]] = {}
        while self.waiting:
            attempt, data = self.waiting[0]
            open_slots = [
                slot
                for slot in self.slots
                if not slot.kill_reason
                and not slot.broken
                and (
                    not slot.queue
                    or (
                        not slot.fenced
                        and len(slot.queue) < depth
                        and sum(slot.sizes) + len(data) <= PIPE_BUDGET
                    )
                )
            ]
            if not open_slots:
                break
            slot = min(open_slots, key=lambda slot: len(slot.queue))
            self.waiting.popleft()
            if not slot.queue:
                slot.started = time.monotonic()
                # Empty: the child has begun (or will skip) everything sent before; this
                # round's batch is numbered from the next one on.
                slot.fenced, slot.head = False, slot.sent + 1
            slot.queue.append(attempt)
            slot.sizes.append(len(data))
            batches.setdefault(id(slot), []).append((attempt, data))
        for slot in self.slots:
            if id(slot) in batches:
                self._send(slot, batches[id(slot)])

    def _send(self, slot: Slot, batch: list) -> None:
        """Send ``batch`` (already queued on ``slot``) to the slot's child.

        A child that died since the last ``collect`` cannot take it: the batch goes back to
        the front of the waiting line, untouched, rather than be blamed on the dead child.
        """
        try:
            slot.pipe.send([data for _, data in batch])
        except OSError:  # BrokenPipeError, ConnectionResetError: the child is gone
            for _ in batch:
                slot.queue.pop()
                slot.sizes.pop()
            self.waiting.extendleft(reversed(batch))
            slot.broken = True
        else:
            slot.sent += len(batch)  # the child numbers them in this order

    def wait_handles(self) -> list:
        """What to pass to ``multiprocessing.connection.wait``: result sockets, death sentinels."""
        handles: list = [slot.results for slot in self.slots]
        return handles + [slot.process.sentinel for slot in self.slots]

    def collect(self) -> list:
        """Reports of handlers that ended since the last call; dead children are replaced."""
        reports = []
        for slot in self.slots:
            reports += self._collect_slot(slot)
        self._dispatch()
        return reports

    def _read_outcomes(self, slot: Slot) -> list[Outcome]:
        """Every complete outcome the child has sent so far (a partial one stays buffered)."""
        while True:
            try:
                chunk = slot.results.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                chunk = b""
            if not chunk:  # the child closed its end: it died (its sentinel will say how)
                break
            slot.received += chunk
        outcomes = []
        buffer, offset = slot.received, 0
        while len(buffer) - offset >= REPORT_HEADER.size:
            (length,) = REPORT_HEADER.unpack_from(buffer, offset)
            end = offset + REPORT_HEADER.size + length
            if len(buffer) < end:
                break
            # From our own child over a private socketpair, as multiprocessing's pipes carry.
            outcomes.append(pickle.loads(buffer[offset + REPORT_HEADER.size : end]))  # noqa: S301
            offset = end
        del buffer[:offset]
        return outcomes

    def _finished(self, slot: Slot) -> list:
        """Reports of the attempts the slot's child says it finished; the next one runs now.

        A kill aimed at a finished attempt missed: it is forgotten, so it cannot be blamed
        on the attempt that started after it (see ``kill_target``).
        """
        reports = []
        for outcome in self._read_outcomes(slot):
            attempt = slot.queue.popleft()
            slot.sizes.popleft()
            slot.head += 1
            slot.started = time.monotonic()
            slot.kill_reason, slot.kill_signal, slot.kill_target = "", 0, None
            slot.escalated = False
            self._reported(outcome)
            reports.append(Finished(attempt, outcome))
        return reports

    def _collect_slot(self, slot: Slot) -> list:
        reports = self._finished(slot)
        if slot.process.is_alive():
            return reports
        reports += self._finished(slot)  # what it sent between our read and its death
        slot.process.join()
        reason = describe_exit(slot.process.exitcode)
        unstarted = list(slot.queue)[1:]
        if slot.queue:
            head = slot.queue.popleft()
            self.held -= 1
            kill_reason, kill_signal = slot.kill_reason, slot.kill_signal
            if slot.kill_target is not None and slot.kill_target != head.task_id:
                # The kill was meant for an attempt that had just ended; this one was hit.
                kill_reason, kill_signal = "", 0
            reports.append(Crashed(head, reason, kill_reason, kill_signal))
        else:
            logger.warning("Idle pool child %s; replacing it", reason)
        slot.queue.clear()
        slot.sizes.clear()
        slot.pipe.close()
        slot.results.close()
        self._start(slot)
        # Never started: first in line for whichever child has room (the new one, usually).
        pickled = [
            (attempt, pickle.dumps(attempt, pickle.HIGHEST_PROTOCOL)) for attempt in unstarted
        ]
        self.waiting.extendleft(reversed(pickled))
        return reports

    def kill(self, task_id: int, signum: int, reason: str) -> bool:
        """Send ``signum`` to the child running ``task_id``; False if none runs it."""
        for slot in self.slots:
            if slot.attempt is not None and slot.attempt.task_id == task_id:
                slot.kill_reason, slot.kill_signal, slot.kill_target = reason, signum, task_id
                slot.killed_at, slot.escalated = time.monotonic(), signum == signal.SIGKILL
                try:
                    os.kill(slot.process.pid, signum)  # type: ignore[arg-type]
                except ProcessLookupError:
                    pass
                return True
        return False

    def escalate(self, slot: Slot) -> None:
        """SIGKILL the child of a slot whose handler outlived a milder kill signal.

        The kill's reason and signal stay as they were: a terminated task still ends
        REVOKED, naming the signal that was asked for.
        """
        slot.escalated = True
        if slot.process is not None and slot.process.pid is not None:
            try:
                os.kill(slot.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def withdraw(self, reason: str) -> list[Attempt]:
        """Take back every attempt that has not started; kill children that hold some.

        For a cold stop or a daemon declared lost: nothing more may start. An attempt
        queued in a child's pipe can only be stopped by killing the child (its running
        handler is killed too, and reported by ``collect`` as usual).
        """
        withdrawn = [attempt for attempt, _ in self.waiting]
        self.waiting.clear()
        for slot in self.slots:
            if len(slot.queue) > 1:
                withdrawn += [slot.queue.pop() for _ in range(len(slot.queue) - 1)][::-1]
                while len(slot.sizes) > 1:
                    slot.sizes.pop()
                if not slot.kill_reason:
                    self.kill(slot.queue[0].task_id, signal.SIGKILL, reason)
        self.held -= len(withdrawn)
        return withdrawn

    def unstarted(self) -> list[Attempt]:
        """Attempts waiting here, and those in a child's queue it has not begun yet."""
        found = [attempt for attempt, _ in self.waiting]
        for slot in self.slots:
            found += list(slot.queue)[self._begun(slot, slot.began.value) :]
        return found

    @staticmethod
    def _begun(slot: Slot, began: int) -> int:
        """How many of the slot's queue the child has begun (its numbers start at ``head``)."""
        return max(0, began - slot.head + 1)

    def take_back(self, task_ids) -> list[Attempt]:
        """Withdraw the held attempts of ``task_ids`` that have not begun (see the base class).

        Those waiting here go at once. One sent to a child can only be skipped by the child:
        under the slot's fence the daemon marks everything sent so far as skipped and reads
        which attempt the child began last; the child, which takes the fence before each
        attempt, skips the marked ones when it gets to them. The slot's other unstarted
        attempts go back to the waiting line (to be sent again, to whichever child has room).
        """
        ids = set(task_ids)
        taken = [attempt for attempt, _ in self.waiting if attempt.task_id in ids]
        kept = [(attempt, data) for attempt, data in self.waiting if attempt.task_id not in ids]
        self.waiting = collections.deque(kept)
        resend: list[Attempt] = []
        for slot in self.slots:
            if not any(attempt.task_id in ids for attempt in slot.queue):
                continue
            if not slot.fence.acquire(timeout=FENCE_WAIT):
                # The child died holding it (its collect re-queues the attempts here, where
                # the next call takes them); or it is stuck: try again next time.
                continue
            try:
                slot.skip_upto.value = slot.sent
                begun = self._begun(slot, slot.began.value)
            finally:
                slot.fence.release()
            unstarted = list(slot.queue)[begun:]
            if not unstarted:
                continue
            for _ in unstarted:
                slot.queue.pop()
                slot.sizes.pop()
            slot.fenced = True
            taken += [attempt for attempt in unstarted if attempt.task_id in ids]
            resend += [attempt for attempt in unstarted if attempt.task_id not in ids]
        self.held -= len(taken)
        if resend:
            self.waiting.extendleft(
                reversed([(a, pickle.dumps(a, pickle.HIGHEST_PROTOCOL)) for a in resend])
            )
            self._dispatch()
        return taken

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
            slot.results.close()
