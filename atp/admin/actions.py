"""The task admin's actions: each goes through the tracker and reports what it changed.

Every action handles tasks one by one (each its own tracker transaction, so events and log
records are written as for any other caller) and ends with one message: how many tasks
changed, and, grouped by reason, which were skipped and why.
"""

import re
import signal
from collections import defaultdict

from django.contrib import admin, messages
from django.utils.text import Truncator

from atp import tracker
from atp.exceptions import ATPError, QueueFull
from atp.models import ACTIVE, TERMINAL, Status, TaskInstance
from atp.validation import IDENTIFIER_MAX_LENGTH

#: The signal "revoke + terminate" sends (Celery's default for ``revoke(terminate=True)``).
TERMINATE_SIGNAL = signal.SIGTERM
_RETRY_SUFFIX = re.compile(r"-retry-\d+$")
#: What the tracker's stop decision returns when it changed nothing: reported as skipped.
DID_NOTHING = {
    tracker.Stopped.ENDED,
    tracker.Stopped.KILL_PENDING,
    tracker.Stopped.ABORT_PENDING,
}


class Outcome:
    """Collects what an action did to each task, then reports it as one admin message."""

    def __init__(self, verb: str):
        self.verb = verb
        self.changed = 0
        self.notes: list[str] = []
        self.skipped: dict[str, list[str]] = defaultdict(list)

    def done(self, note: str = "") -> None:
        """Count one changed task (with an optional note, e.g. the new task's name)."""
        self.changed += 1
        if note:
            self.notes.append(note)

    def skip(self, task, reason: str) -> None:
        """Record that ``task`` was left alone because of ``reason``."""
        self.skipped[reason].append(str(task))

    def report(self, modeladmin, request) -> None:
        """Send the summary as an admin message (warning level if anything was skipped)."""
        text = f"{self.verb} {self.changed} task(s)."
        if self.notes:
            text += " " + "; ".join(self.notes[:10]) + ("; …" if len(self.notes) > 10 else "")
        if self.skipped:
            parts = []
            for reason, names in self.skipped.items():
                listed = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
                parts.append(f"{len(names)} {reason} ({listed})")
            total = sum(len(names) for names in self.skipped.values())
            text += f" Skipped {total}: " + "; ".join(parts) + "."
        level = messages.WARNING if self.skipped else messages.SUCCESS
        modeladmin.message_user(request, Truncator(text).chars(2000), level)


def _by(request) -> str:
    return f"by {request.user.get_username()} in the admin"


def _tasks(queryset):
    # Order by id so reports are stable; select_related because messages name the type.
    return queryset.select_related("type").order_by("pk")


def retry_identifier(task) -> str:
    """The first free ``<identifier>-retry-<n>`` for a re-run of an ended task (≤ 64 chars)."""
    base = _RETRY_SUFFIX.sub("", task.identifier)
    n = 1
    while True:
        suffix = f"-retry-{n}"
        candidate = base[: IDENTIFIER_MAX_LENGTH - len(suffix)] + suffix
        # One lookup per candidate on the unique (type, identifier) index; n stays small.
        if not TaskInstance.objects.filter(type_id=task.type_id, identifier=candidate).exists():
            return candidate
        n += 1


def reenqueue_one(task, request, outcome: Outcome) -> None:
    """Put one task back in the queue: a claimed/running/paused task itself, an ended one as a copy.

    An ended task never changes status again (DESIGN.md), so re-running it enqueues a NEW
    task with the same type and input, named ``<identifier>-retry-<n>``.
    """
    try:
        if task.status in ACTIVE:
            tracker.reenqueue_task(task.pk, f"Re-enqueued {_by(request)}.")
            outcome.done()
        elif task.status in TERMINAL:
            identifier = retry_identifier(task)
            new_id = tracker.enqueue_task(
                task.type.identifier,
                identifier,
                task.input,
                f"Re-run of {task} (id {task.pk}, {task.status_name}) {_by(request)}.",
                priority=task.priority,
                queue=task.queue,
            )
            outcome.done(f"{task} ended, so a new task {identifier} (id {new_id}) was created")
        elif task.status == Status.ACCEPTED:
            outcome.skip(task, "already waiting in the queue")
        else:
            outcome.skip(task, f"{task.status_name.lower()} (cannot be re-enqueued)")
    except QueueFull:
        outcome.skip(task, "not re-run: the queue is full")
    except ATPError as exc:
        outcome.skip(task, f"changed meanwhile: {exc}")


def _stopper(stop):
    """A per-task function that stops a task with ``stop(task_id, by)`` (the tracker decides)."""

    def stop_one(task, request, outcome: Outcome) -> None:
        try:
            stopped = stop(task.pk, _by(request))
        except ATPError as exc:
            outcome.skip(task, f"changed meanwhile: {exc}")
            return
        if stopped in DID_NOTHING:
            outcome.skip(task, str(stopped))
        else:
            outcome.done()

    return stop_one


def _terminate(task_id, by):
    return tracker.cancel_task(task_id, by, terminate=True, signum=TERMINATE_SIGNAL)


#: Revoke: cancel a task that has not ended; a running handler is not interrupted.
revoke_one = _stopper(tracker.cancel_task)
#: Revoke + terminate: the daemon that owns a running task kills the handler and revokes it
#: (``terminated=True``), so the task is REVOKED within one heartbeat, not at once.
revoke_terminate_one = _stopper(_terminate)
#: Abort: running handlers are asked to stop (they poll ``is_aborted``); others are revoked.
abort_one = _stopper(tracker.abort_task)


def delete_one(task, request, outcome: Outcome) -> None:
    """Delete one task through the tracker."""
    if tracker.delete_task(task.pk):
        outcome.done()
    else:
        outcome.skip(task, "already deleted")


def apply(per_task, queryset, request, outcome: Outcome) -> Outcome:
    """Run ``per_task`` on every task of ``queryset`` (by id), each its own tracker call."""
    for task in _tasks(queryset):
        per_task(task, request, outcome)
    return outcome


@admin.action(
    description="Re-enqueue selected tasks (ended ones as a new task)", permissions=["change"]
)
def reenqueue(modeladmin, request, queryset):
    """Put tasks back in the queue (see ``reenqueue_one``)."""
    apply(reenqueue_one, queryset, request, Outcome("Re-enqueued")).report(modeladmin, request)


@admin.action(description="Revoke selected tasks", permissions=["change"])
def revoke(modeladmin, request, queryset):
    """Cancel tasks that have not ended; a running handler is not interrupted."""
    apply(revoke_one, queryset, request, Outcome("Revoked")).report(modeladmin, request)


@admin.action(
    description="Revoke selected tasks and terminate running handlers", permissions=["change"]
)
def revoke_terminate(modeladmin, request, queryset):
    """Revoke tasks; the daemons of running ones kill the handler and revoke the task."""
    outcome = Outcome("Revoked or asked to terminate")
    apply(revoke_terminate_one, queryset, request, outcome).report(modeladmin, request)


@admin.action(description="Abort selected tasks", permissions=["change"])
def abort(modeladmin, request, queryset):
    """Ask running handlers to stop (they poll ``is_aborted``); a task not started is revoked."""
    apply(abort_one, queryset, request, Outcome("Aborted")).report(modeladmin, request)
