"""Small HTML pieces the admin pages share: status badges, progress bars, durations, JSON."""

import json

from django.utils import timezone
from django.utils.html import format_html

from atp.models import Status

#: Badge colours per status: waiting grey, owned blue, paused amber, ended green/red/brown.
STATUS_COLOURS = {
    Status.UNDEFINED: "#777",
    Status.ACCEPTED: "#6c757d",
    Status.SCHEDULED: "#17a2b8",
    Status.RUNNING: "#007bff",
    Status.PAUSED: "#e0a800",
    Status.FINISHED: "#28a745",
    Status.FAILED: "#dc3545",
    Status.REVOKED: "#8d6e63",
    Status.WAITING: "#6f42c1",
    Status.BLOCKED: "#adb5bd",
}


def status_badge(status: int):
    """A coloured pill with the status name."""
    return format_html(
        '<span class="atp-badge atp-status-{}" style="background:{};color:#fff;'
        'padding:2px 8px;border-radius:10px;font-size:11px;font-weight:bold">{}</span>',
        Status(status).label.lower(),
        STATUS_COLOURS[Status(status)],
        Status(status).label,
    )


def progress_bar(progress):
    """A bar for a task's ``progress`` JSON (``percent``, or ``done`` of ``total``); '' if none.

    A fan-out parent's progress has no ``done``: its ended subtasks (succeeded + failed +
    skipped) of ``total`` are the bar.
    """
    if not isinstance(progress, dict):
        return ""
    percent = progress.get("percent")
    if percent is None and progress.get("total"):
        done = progress.get("done")
        if done is None:
            done = sum(progress.get(key) or 0 for key in FAN_OUT_ENDED)
        percent = 100.0 * done / progress["total"]
    if percent is None:
        return format_html("{}", progress.get("done", ""))
    percent = max(0.0, min(100.0, float(percent)))
    return format_html(
        '<div class="atp-progress" title="{}%" style="width:80px;background:#ddd;'
        'border-radius:3px;height:10px"><div style="width:{}%;background:#007bff;height:10px;'
        'border-radius:3px"></div></div>',
        f"{percent:.0f}",
        f"{percent:.1f}",
    )


#: The counters of a fan-out parent's progress that count ended subtasks.
FAN_OUT_ENDED = ("succeeded", "failed", "skipped")


def moment(value, now=None) -> str:
    """A time to the second, as short as is unambiguous: ``22:27:14`` today, else with the date."""
    if value is None:
        return ""
    now = timezone.localtime(now or timezone.now())
    value = timezone.localtime(value)
    if value.date() == now.date():
        return value.strftime("%H:%M:%S")
    if value.year == now.year:
        return value.strftime("%m-%d %H:%M:%S")
    return value.strftime("%Y-%m-%d %H:%M:%S")


def ago(value, now=None) -> str:
    """How long ago ``value`` was: ``12 s ago``, ``4 min 2 s ago``; ``in 3 s`` for the future."""
    if value is None:
        return ""
    seconds = ((now or timezone.now()) - value).total_seconds()
    if seconds < 0:
        return f"in {_whole(-seconds)}"
    return f"{_whole(seconds)} ago"


def _whole(seconds: float) -> str:
    return f"{int(seconds)} s" if seconds < 60 else duration(seconds)


def timestamp(value, now=None):
    """A time cell: the short time to the second, the full time and the age as its tooltip."""
    if value is None:
        return "—"
    full = timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z")
    return format_html('<span title="{} ({})">{}</span>', full, ago(value, now), moment(value, now))


def heartbeat(value, now=None):
    """A heartbeat cell: the time to the second and how long ago it was."""
    if value is None:
        return "—"
    return format_html("{} <small>({})</small>", moment(value, now), ago(value, now))


def boolean_icon(value):
    """The admin's yes/no icon, as the change list draws a ``boolean=True`` column."""
    from django.contrib.admin.templatetags.admin_list import _boolean_icon

    return _boolean_icon(value)


def duration(seconds) -> str:
    """Seconds as a short human duration: ``850 ms``, ``12.3 s``, ``4 min 2 s``, ``3 h 5 min``."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def runtime_of(task, now) -> float | None:
    """Seconds a task has run: start to end, or start to ``now`` while it has not ended."""
    if task.started_at is None:
        return None
    return ((task.finished_at or now) - task.started_at).total_seconds()


def pretty_json(value):
    """Indented JSON in a ``<pre>`` block (escaped)."""
    return format_html(
        '<pre class="atp-json" style="white-space:pre-wrap;margin:0">{}</pre>',
        json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False),
    )


def item_counts_of(task) -> dict | None:
    """The item counts to show for ``task``: a parent's totals, or a subtask's own entry.

    A subtask's counts live in its parent's table (one extra query, on its page only).
    """
    progress = task.progress if isinstance(task.progress, dict) else {}
    if isinstance(progress.get("items"), dict):
        return progress["items"]
    if task.parent_id is None or task.parent is None:
        return None
    parent_progress = task.parent.progress if isinstance(task.parent.progress, dict) else {}
    entry = (parent_progress.get("subtasks") or {}).get(task.identifier) or {}
    return entry.get("items")
