"""The main loop of a pool child process: receive attempts, run their handlers, report back."""

import os
import pickle
import signal
import struct
import threading


def _die_with_daemon(alive) -> None:
    """Exit at once when the daemon dies (its end of the ``alive`` pipe closes).

    Without this a child whose daemon was SIGKILLed would finish its handler while the
    task is recovered and run again elsewhere: two attempts of one task at the same time.
    """
    try:
        alive.recv()
    except (EOFError, OSError):
        pass
    os._exit(70)


def _raise_soft_time_limit(signum, frame):
    from atp.exceptions import SoftTimeLimitExceeded

    raise SoftTimeLimitExceeded("the task ran past its soft time limit")


def report(results, outcome) -> None:
    """Send one outcome to the daemon: its pickle, prefixed with the pickle's length."""
    data = pickle.dumps(outcome, pickle.HIGHEST_PROTOCOL)
    results.sendall(struct.pack("!I", len(data)) + data)


#: Exit code of a child that could not set Django up (sysexits' EX_CONFIG).
EXIT_CANNOT_START = 78


def _report_start(ready, problem: str | None) -> None:
    """Tell the daemon whether this child can serve (None) or why it cannot."""
    try:
        ready.send(problem)
        ready.close()
    except OSError:
        pass  # a replacement child: nobody waits for its start


def main(tasks, results, alive, ready, fence) -> None:
    """Serve the attempts sent on the ``tasks`` pipe until it sends None or closes.

    First, report on ``ready`` whether Django could be set up (with the daemon's settings,
    atp.daemon.child_setup); a child that cannot exits without touching any task. Each
    message is a list of pickled attempts, run in order; each outcome goes back on the
    ``results`` socket as soon as its handler ends, so the daemon always knows which
    attempt runs now (the one after the last reported). ``fence`` is ``(lock, began,
    skip_upto)`` (``atp.daemon.pool.Slot``): the attempts are numbered as they arrive, and
    one the daemon took back (number up to ``skip_upto``) is skipped without a report.
    """
    from atp.daemon import child_setup

    problem = child_setup.setup()
    _report_start(ready, problem)
    if problem is not None:
        os._exit(EXIT_CANNOT_START)
    from atp.daemon.db import heal, use_persistent_connections
    from atp.daemon.runner import execute, failure

    use_persistent_connections()

    # Ctrl-C in a terminal signals the whole process group; the daemon decides what
    # happens to running handlers, so the children ignore it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The daemon sends SIGUSR1 when the handler passes its soft time limit.
    signal.signal(signal.SIGUSR1, _raise_soft_time_limit)
    threading.Thread(target=_die_with_daemon, args=(alive,), daemon=True).start()
    results.setblocking(True)
    lock, began, skip_upto = fence
    number = 0
    while True:
        try:
            batch = tasks.recv()
        except (EOFError, OSError):
            break
        if batch is None:
            break
        for data in batch:
            number += 1
            # Under the lock the daemon takes to take attempts back: either it sees this
            # one begun, or this child sees it taken back. Never both, never neither.
            with lock:
                if number <= skip_upto.value:
                    continue
                began.value = number
            heal()
            # Pickles from the daemon that forked us, over a private pipe (as multiprocessing
            # itself does); a task's input inside them is JSON-checked data, never a pickle.
            attempt = pickle.loads(data)  # noqa: S301
            try:
                outcome = execute(attempt)
            except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt, GeneratorExit…
                # …from a handler fail its task (with its error), not this child.
                outcome = failure(attempt, exc)
            heal()
            report(results, outcome)
    # os._exit: skip interpreter teardown, which has nothing to flush here.
    os._exit(0)
