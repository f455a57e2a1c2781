"""The main loop of a pool child process: receive attempts, run their handlers, report back."""

import os
import signal
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


def main(tasks, alive) -> None:
    """Serve attempts sent on the ``tasks`` pipe until it sends None or closes."""
    import django
    from django.apps import apps

    if not apps.ready:
        django.setup()
    from atp.db import heal, use_persistent_connections
    from atp.runner import execute

    use_persistent_connections()

    # Ctrl-C in a terminal signals the whole process group; the daemon decides what
    # happens to running handlers, so the children ignore it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The daemon sends SIGUSR1 when the handler passes its soft time limit.
    signal.signal(signal.SIGUSR1, _raise_soft_time_limit)
    threading.Thread(target=_die_with_daemon, args=(alive,), daemon=True).start()
    while True:
        try:
            attempt = tasks.recv()
        except (EOFError, OSError):
            break
        if attempt is None:
            break
        heal()
        outcome = execute(attempt)
        heal()
        tasks.send(outcome)
    # os._exit: skip interpreter teardown, which has nothing to flush here.
    os._exit(0)
