"""Operator requests (admin): ask the owning daemon to kill a task, or its handler to abort.

Kept apart so they can be unified with atp/control.py (revoke(terminate=True), abort) at merge:
both only set the request fields the owning daemon / the handler act on.
"""

from django.db import transaction
from django.utils import timezone

from atp import validation
from atp.exceptions import InvalidTransition
from atp.models import LogRecord, Status, sources_of
from atp.tracker.core import _get_task


def request_kill(task_id, signum, message="") -> None:
    """Ask the daemon that runs a task to kill its handler with ``signum``.

    Only a RUNNING or PAUSED task has a handler to kill; the owning daemon sees
    ``kill_signal``, kills the handler and revokes the task (``terminated=True``). The
    request is noted in the task's log (no Celery event: Celery sends none for requests).
    Raises InvalidTransition for any other status.
    """
    signum = validation.integer(signum, "signum", minimum=1)
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
