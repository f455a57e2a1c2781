"""Task list columns shared by the change list and its live refresh (``atp.admin.live``).

Each is a plain function of a task, so the live JSON renders a cell exactly as the page did.
"""

from django.contrib import admin
from django.utils import timezone
from django.utils.html import format_html

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


@admin.display(description="tries", ordering="attempts")
def attempts(task):
    """Attempts so far (a short header keeps the list within 1400 px)."""
    return task.attempts


@admin.display(description="server", ordering="server_id")
def server(task):
    """The daemon that owns (or last owned) the task."""
    return task.server_id or "-"


#: The cells of a task row that change while it runs: name → function of the task.
LIVE_CELLS = {
    "status_badge": lambda task: display.status_badge(task.status),
    "attempts": lambda task: str(attempts(task)),
    "server": server,
    "progress_bar": lambda task: display.progress_bar(task.progress),
    "started": started,
    "finished": finished,
    "runtime": lambda task: display.duration(display.runtime_of(task, timezone.now())),
}


def _detail_time(field: str, label: str):
    def show(self, task):
        value = getattr(task, field)
        if value is None:
            return "—"
        full = timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z")
        return format_html("{} <small>({})</small>", full, display.ago(value))

    show.__doc__ = f"{label.capitalize()}, to the second, with its age."
    return admin.display(description=label)(show)


class DetailTimes:
    """Read-only times of a task's page to the second (Django's default shows minutes)."""

    enqueued_time = _detail_time("enqueued_at", "enqueued at")
    received_time = _detail_time("received_at", "received at")
    started_time = _detail_time("started_at", "started at")
    finished_time = _detail_time("finished_at", "finished at")
    updated_time = _detail_time("updated_at", "updated at")
    abort_requested_time = _detail_time("abort_requested_at", "abort requested at")

    #: The names, for ``get_readonly_fields``.
    names = (
        "enqueued_time",
        "received_time",
        "started_time",
        "finished_time",
        "updated_time",
        "abort_requested_time",
    )
