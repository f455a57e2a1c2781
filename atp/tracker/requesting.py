"""Operator requests (admin): ask the owning daemon to kill a task, or its handler to abort.

Kept apart so they can be unified with atp/control.py (revoke(terminate=True), abort) at merge:
both only set the request fields the owning daemon / the handler act on.
"""

import signal

from django.db import transaction
from django.utils import timezone

from atp import validation
from atp.exceptions import InvalidInput, InvalidTransition
from atp.models import LogRecord, Status, sources_of
from atp.tracker.core import _get_task

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
