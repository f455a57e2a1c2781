"""Task list columns shared by the change list and its live refresh (``atp.admin.live``).

Each is a plain function of a task, so the live JSON renders a cell exactly as the page did.
"""

from django.contrib import admin
from django.utils import timezone

from atp.admin import display


@admin.display(description="enqueued", ordering="enqueued_at")
def enqueued(task):
    """When the task was enqueued, to the second."""
    return display.timestamp(task.enqueued_at)


@admin.display(description="started", ordering="started_at")
def started(task):
    """When the current or last attempt started, to the second."""
    return display.timestamp(task.started_at)


@admin.display(description="finished", ordering="finished_at")
def finished(task):
    """When the task ended, to the second."""
    return display.timestamp(task.finished_at)


#: The cells of a task row that change while it runs: name → function of the task.
LIVE_CELLS = {
    "status_badge": lambda task: display.status_badge(task.status),
    "attempts": lambda task: str(task.attempts),
    "server_id": lambda task: task.server_id,
    "progress_bar": lambda task: display.progress_bar(task.progress),
    "started": started,
    "finished": finished,
    "runtime": lambda task: display.duration(display.runtime_of(task, timezone.now())),
}
