"""Small HTML pieces the admin pages share: status badges, progress bars, durations, JSON."""

import json

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
    """A bar for a task's ``progress`` JSON (``percent``, or ``done`` of ``total``); '' if none."""
    if not isinstance(progress, dict):
        return ""
    percent = progress.get("percent")
    if percent is None and progress.get("total"):
        percent = 100.0 * (progress.get("done") or 0) / progress["total"]
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
