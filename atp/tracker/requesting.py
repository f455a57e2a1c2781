"""Operator requests: revoke a task, ask its daemon to kill its handler, or ask it to abort.

``cancel_task`` and ``abort_task`` are the one decision "revoke now, or ask the task's daemon
(kill) or its handler (abort) to stop it?" that ``atp.control`` (Python and the HTTP API),
the admin's actions and Celery's remote control all use. ``request_kill`` and
``request_abort`` only set the request fields the owning daemon and the handler act on.
"""

import enum
import signal

from django.db import transaction
from django.utils import timezone

from atp import validation
from atp.exceptions import InvalidInput, InvalidTransition
from atp.models import TERMINAL, LogRecord, Status, sources_of
from atp.tracker.core import _get_task
from atp.tracker.running import revoke_task


class Stopped(enum.StrEnum):
    """What ``cancel_task`` or ``abort_task`` did (the admin reports the ones that did nothing)."""

    ENDED = "already ended"
    REVOKED = "revoked"
    KILL_REQUESTED = "termination requested"
    KILL_PENDING = "termination already requested"
    ABORT_REQUESTED = "abort requested"
    ABORT_PENDING = "abort already requested"


#: Statuses in which a handler runs (or is paused), so there is a handler to kill or abort.
HANDLER_RUNS = (Status.RUNNING, Status.PAUSED)


def cancel_task(task_id, by="", *, terminate=False, signum=signal.SIGTERM) -> Stopped:
    """Celery's revoke: a task that has not ended is REVOKED now, its handler's later writes
    refused; with ``terminate`` a RUNNING or PAUSED one instead gets ``kill_signal`` =
    ``signum``, and the daemon that runs it kills the handler and revokes it.

    ``by`` says who asked, for the log (``"by ops in the admin"``). Returns ``ENDED``,
    ``REVOKED``, ``KILL_REQUESTED`` or ``KILL_PENDING`` (the same signal was already asked
    for; a different one replaces it, so SIGKILL can follow a SIGTERM the handler ignored).
    """
    if terminate:
        signum = validation.integer(signum, "signum", minimum=1)
    # The row lock makes the status read and the write one decision: a task cannot end, or
    # start running, between them.
    with transaction.atomic():
        task = _get_task(task_id, lock=True)
        if task.status in TERMINAL:
            return Stopped.ENDED
        if terminate and task.status in HANDLER_RUNS:
            if task.kill_signal == signum:
                return Stopped.KILL_PENDING
            request_kill(task.pk, signum, _said(f"Termination requested (signal {signum})", by))
            return Stopped.KILL_REQUESTED
        revoke_task(task.pk, _said("Revoked", by))
        return Stopped.REVOKED


def abort_task(task_id, by="") -> Stopped:
    """Celery's AbortableTask abort: a RUNNING or PAUSED task gets ``abort_requested_at``
    (its handler polls ``is_aborted()`` and the task ends REVOKED when the handler returns);
    a task that has not started, or waits for its subtasks, is REVOKED now.

    Returns ``ENDED``, ``REVOKED``, ``ABORT_REQUESTED`` or ``ABORT_PENDING``.
    """
    with transaction.atomic():
        task = _get_task(task_id, lock=True)
        if task.status in TERMINAL:
            return Stopped.ENDED
        if task.status in HANDLER_RUNS:
            if task.abort_requested_at is not None:
                return Stopped.ABORT_PENDING
            request_abort(task.pk, _said("Abort requested", by))
            return Stopped.ABORT_REQUESTED
        revoke_task(task.pk, _said("Aborted before it ran", by))
        return Stopped.REVOKED


def _said(what: str, by: str) -> str:
    return f"{what} {by}." if by else f"{what}."


#: Signals that do not end a process by default: they stop or continue it (a stopped
#: handler would hold its slot for ever and hang the daemon's stop), or are ignored.
#: A termination request with one of them is refused.
NOT_TERMINATING = frozenset(
    {
        signal.SIGSTOP,
        signal.SIGTSTP,
        signal.SIGCONT,
        signal.SIGTTIN,
        signal.SIGTTOU,
        signal.SIGCHLD,
        signal.SIGURG,
        signal.SIGWINCH,
    }
)


def check_kill_signal(signum: int) -> int:
    """``signum`` if it can terminate a handler; InvalidInput naming it otherwise."""
    if signum in NOT_TERMINATING:
        raise InvalidInput(
            f"signal {signal.Signals(signum).name} does not terminate a process (it stops, "
            "continues or is ignored by default); use SIGTERM, SIGINT, SIGKILL, SIGUSR1…"
        )
    return signum


def request_kill(task_id, signum, message="") -> None:
    """Ask the daemon that runs a task to kill its handler with ``signum``.

    Only a RUNNING or PAUSED task has a handler to kill; the owning daemon sees
    ``kill_signal``, kills the handler and revokes the task (``terminated=True``). The
    request is noted in the task's log (no Celery event: Celery sends none for requests).
    Raises InvalidTransition for any other status, InvalidInput for a signal that does not
    terminate (``NOT_TERMINATING``). The daemon escalates to SIGKILL when the handler
    outlives the signal for ``atp.daemon.engine.TERMINATE_GRACE`` seconds.
    """
    signum = check_kill_signal(validation.integer(signum, "signum", minimum=1))
    _request(
        task_id,
        {Status.RUNNING, Status.PAUSED},
        {"kill_signal": signum},
        message or f"Termination requested (signal {signum}).",
    )


def request_abort(task_id, message="") -> None:
    """Ask a task's handler to stop: sets ``abort_requested_at``, which it polls.

    Only a task that has not ended can be aborted; raises InvalidTransition otherwise.
    """
    _request(
        task_id,
        sources_of(Status.REVOKED),
        {"abort_requested_at": timezone.now()},
        message or "Abort requested.",
    )


def _request(task_id, sources, values, message) -> None:
    with transaction.atomic():
        task = _get_task(task_id, lock=True)
        if task.status not in sources:
            raise InvalidTransition(
                f"task {task} (id {task.pk}) is {task.status_name}; {message.rstrip('.')} "
                "is only possible while it is "
                + ", ".join(Status(source).label for source in sorted(sources))
            )
        for name, value in values.items():
            setattr(task, name, value)
        task.save(update_fields=list(values))
        LogRecord.objects.create(instance=task, status=task.status, message=message)
