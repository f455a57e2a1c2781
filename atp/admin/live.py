"""Small JSON endpoints the console's pages poll to refresh their numbers in place.

Every endpoint needs the permission to view tasks (or daemons) and answers from the same
indexed queries the pages use (``atp.admin.stats``): no full count of the task table, so a
poll every few seconds stays cheap at millions of tasks. Cells come back as the HTML the page
rendered, so a refreshed cell looks exactly like a freshly loaded one.
"""

from datetime import timedelta
from urllib.parse import urlencode

from django.core.exceptions import PermissionDenied
from django.http import JsonResponse
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from atp import tracker
from atp.admin import columns, display, stats
from atp.conf import settings
from atp.models import TERMINAL, Status, TaskInstance, Worker

#: Rows one poll may ask about (a change list page shows at most this many).
MAX_IDS = 200


def _ids(request, convert=int) -> list:
    raw = request.GET.get("ids", "")
    values = []
    for part in raw.split(",")[:MAX_IDS]:
        part = part.strip()
        if part:
            try:
                values.append(convert(part))
            except ValueError:
                continue  # a stray value is skipped, not an error: the page only sends ids
    return values


def dashboard_numbers(now) -> dict:
    """The dashboard's changing numbers as ``{"text": {key: text}, "html": {key: html}}``."""
    counts = stats.counts_by_type()
    totals = counts.totals()
    buckets = stats.throughput(now)
    ended = sum(bucket.total for bucket in buckets)
    failed = sum(bucket.failed for bucket in buckets)
    oldest = stats.oldest_waiting(now)
    text = {
        f"status-{status.label}": ("≈" if counts.estimated and status in TERMINAL else "")
        + str(totals[status])
        for status in Status
    }
    text.update(
        {
            "now": timezone.localtime(now).strftime("%Y-%m-%d %H:%M:%S"),
            "depth": str(tracker.get_queue_size()),
            "ended": str(ended),
            "failed": str(failed),
            "rate": f"{100.0 * failed / ended:.1f} %" if ended else "—",
            "oldest-age": display.ago(oldest.run_after, now) if oldest else "—",
        }
    )
    workers = stats.live_workers(settings.WORKER_TIMEOUT)
    lost = stats.lost_workers(settings.WORKER_TIMEOUT)
    html = {
        "workers": render_to_string(
            "admin/atp/live_workers.html",
            {"workers": workers, "worker_timeout": settings.WORKER_TIMEOUT, "now": now},
        ),
        "lost": render_to_string("admin/atp/lost_workers.html", {"lost": lost, "now": now}),
    }
    return {"text": text, "html": html}


def dashboard_json(model_admin, request):
    """GET: the dashboard's numbers (view permission on tasks)."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    return JsonResponse(dashboard_numbers(timezone.now()))


def tasks_json(model_admin, request):
    """GET ``?ids=1,2,3``: the changing cells of those rows, ``{"rows": {id: {cell: html}}}``."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    tasks = TaskInstance.objects.filter(pk__in=_ids(request)).only(
        "pk",
        "status",
        "attempts",
        "server_id",
        "progress",
        "started_at",
        "finished_at",
    )
    rows = {
        str(task.pk): {name: str(cell(task)) for name, cell in columns.LIVE_CELLS.items()}
        for task in tasks
    }
    return JsonResponse({"rows": rows})


def tasks_link(server_id: str, count: int):
    """The running-task count of a daemon, linked to its tasks."""
    url = reverse("admin:atp_taskinstance_changelist") + "?" + urlencode({"server": server_id})
    return format_html('<a href="{}">{}</a>', url, count)


def workers_json(model_admin, request):
    """GET ``?ids=server-1,…``: heartbeat, liveness and running tasks of those daemons."""
    if not request.user.has_perm("atp.view_worker"):
        raise PermissionDenied
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.WORKER_TIMEOUT)
    workers = Worker.objects.filter(server_id__in=_ids(request, str))
    running = stats.running_by_server([worker.server_id for worker in workers])
    rows = {}
    for worker in workers:
        alive = worker.stopped_at is None and worker.heartbeat_at >= cutoff
        rows[worker.server_id] = {
            "heartbeat_at": str(display.heartbeat(worker.heartbeat_at, now)),
            "stopped_at": str(display.timestamp(worker.stopped_at, now)),
            "alive": str(display.boolean_icon(alive)),
            "tasks_running": str(tasks_link(worker.server_id, running.get(worker.server_id, 0))),
        }
    return JsonResponse({"rows": rows})
