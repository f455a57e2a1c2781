"""The operations dashboard: queue, throughput, failures and daemons on one admin page."""

from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.utils import timezone

from atp import tracker
from atp.admin import charts, display, stats
from atp.admin.display import status_badge
from atp.admin.pauses import PAUSE_PERMISSION
from atp.conf import settings
from atp.models import TERMINAL, QueuePause, Status, TaskType


def dashboard_view(model_admin, request):
    """Render the dashboard for users who may view tasks."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    now = timezone.now()
    types = list(TaskType.objects.all())
    counts = stats.counts_by_type()
    totals = counts.totals()
    # UNDEFINED is a legacy status: its column only when some task has it (keeps 1400 px).
    shown = [status for status in Status if status != Status.UNDEFINED or totals[status]]
    buckets = stats.throughput(now)
    ended = sum(bucket.total for bucket in buckets)
    failed = sum(bucket.failed for bucket in buckets)
    depth, limit = tracker.get_queue_size(), tracker.get_max_queue_size()
    rows = [
        {
            "type": task_type,
            "cells": [counts.of(task_type.pk).get(status, 0) for status in shown],
            "waiting": counts.of(task_type.pk).get(Status.ACCEPTED, 0),
            "limit": task_type.max_queue_size,
        }
        for task_type in types
    ]
    oldest = stats.oldest_waiting(now)
    queues = stats.queue_depths(now)
    paused_queues = list(QueuePause.objects.values_list("queue", flat=True))
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "ATP dashboard",
        "opts": model_admin.model._meta,
        "now": now,
        "statuses": [
            {
                "status": status,
                "badge": status_badge(status),
                "count": totals[status],
                "approx": counts.estimated and status in TERMINAL,
            }
            for status in Status
            if status != Status.UNDEFINED or totals[status]
        ],
        "status_headers": [status_badge(status) for status in shown],
        "rows": rows,
        "estimated": counts.estimated,
        "exact_rows_limit": stats.EXACT_ROWS_LIMIT,
        "depth": depth,
        "limit": limit,
        "gauge": charts.queue_gauge_svg(depth, limit),
        "chart": charts.throughput_svg(buckets),
        "queue_chart": charts.queue_svg(queues, now),
        "runtime_chart": charts.runtime_svg(stats.runtime_percentiles(now)),
        "lost": stats.lost_workers(settings.WORKER_TIMEOUT, now),
        "ended_last_hour": ended,
        "failed_last_hour": failed,
        "failure_rate": (100.0 * failed / ended) if ended else None,
        "oldest": oldest,
        "oldest_age": display.ago(oldest.run_after, now) if oldest else None,
        "workers": stats.live_workers(settings.WORKER_TIMEOUT),
        "worker_timeout": settings.WORKER_TIMEOUT,
        "paused_queues": paused_queues,
        "queue_names": sorted({depth.queue for depth in queues} | set(paused_queues)),
        "may_pause": request.user.has_perm(PAUSE_PERMISSION),
        "paused_types": [task_type for task_type in types if task_type.paused],
    }
    return TemplateResponse(request, "admin/atp/dashboard.html", context)
