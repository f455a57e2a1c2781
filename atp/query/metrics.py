"""ATP's numbers for Prometheus, computed from the database on each scrape.

From the database, not from counters kept in one process: every web process answers the
same, whatever number of daemons and web processes run, and a restart loses nothing. Each
family is one query on an index that holds only what it counts (the queue, the live tasks,
the recent ends): none reads the history of ended tasks. ``atp_tasks_ended_total`` comes
from tallies that each scrape brings up to date with the tasks ended since the previous one
(``atp.query.ended``).

Families (``prometheus_client``'s text format, see ``render``):

- ``atp_tasks{type,state}`` — gauge: tasks that have not ended, by type and Celery state
  (PENDING, RECEIVED, STARTED, …);
- ``atp_queue_waiting{queue}`` — gauge: due tasks waiting (ACCEPTED, ``run_after`` passed);
- ``atp_queue_oldest_due_seconds{queue}`` — gauge: how long the oldest due task of the
  queue has been due (0 when none is);
- ``atp_tasks_ended_total{type,state}`` — counter: tasks that ended (SUCCESS, FAILURE,
  REVOKED) up to ``ended.LAG`` before the scrape, deleted ones included: it only grows;
- ``atp_task_runtime_seconds{type}`` — gauge histogram: start-to-end times of the tasks that
  ended within the last ``RUNTIME_WINDOW`` seconds (``histogram_quantile`` works on it);
- ``atp_workers_alive`` — gauge: daemons whose heartbeat is within ``WORKER_TIMEOUT``.
"""

from datetime import timedelta

from django.db.models import Count, Min
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
)
from prometheus_client.utils import floatToGoString

from atp.conf import settings
from atp.models import TERMINAL, Status, TaskInstance, TaskType, Worker
from atp.query import ended as ended_tally
from atp.query.states import CELERY_STATE

#: Tasks that ended this many seconds ago or less make the run-time histogram.
RUNTIME_WINDOW = 300
#: Upper bounds (seconds) of the run-time histogram's buckets.
RUNTIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
#: The text format's content type (version 0.0.4), as Prometheus expects it.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class DatabaseCollector:
    """A ``prometheus_client`` collector whose every sample is read from the database."""

    def collect(self):
        """Yield the metric families (one query each; see the module docstring)."""
        now = timezone.now()
        names = dict(TaskType.objects.values_list("pk", "identifier"))
        tasks = GaugeMetricFamily(
            "atp_tasks", "Tasks that have not ended, by type and state.", labels=["type", "state"]
        )
        # The partial index atp_task_live holds exactly these rows, not the history.
        live = TaskInstance.objects.order_by().live().values_list("type_id", "status")
        for type_id, status, n in live.annotate(n=Count("pk")):
            tasks.add_metric([names.get(type_id, str(type_id)), CELERY_STATE[Status(status)]], n)
        yield tasks
        ended = CounterMetricFamily(
            "atp_tasks_ended",
            f"Tasks ended, by type and state, counted up to {ended_tally.LAG.seconds} s ago.",
            labels=["type", "state"],
        )
        for (type_id, status), n in sorted(ended_tally.ended_totals(now).items()):
            ended.add_metric([names.get(type_id, str(type_id)), CELERY_STATE[Status(status)]], n)
        yield ended
        yield from _queue_families(now)
        yield _runtime_family(now, names)
        alive = Worker.objects.alive(now - timedelta(seconds=settings.WORKER_TIMEOUT)).count()
        yield GaugeMetricFamily(
            "atp_workers_alive", "Daemons whose heartbeat is recent.", value=alive
        )


def _queue_families(now):
    waiting = GaugeMetricFamily(
        "atp_queue_waiting", "Due tasks waiting, by queue.", labels=["queue"]
    )
    oldest = GaugeMetricFamily(
        "atp_queue_oldest_due_seconds",
        "Seconds the oldest due waiting task of the queue has been due.",
        labels=["queue"],
    )
    # The claim's partial index (status = ACCEPTED) holds only the queue.
    due = (
        TaskInstance.objects.order_by()
        .filter(status=Status.ACCEPTED, run_after__lte=now)
        .values_list("queue")
        .annotate(n=Count("pk"), since=Min("run_after"))
    )
    for queue, n, since in due:
        waiting.add_metric([queue], n)
        oldest.add_metric([queue], max(0.0, (now - since).total_seconds()))
    return waiting, oldest


def _runtime_family(now, names):
    family = GaugeHistogramMetricFamily(
        "atp_task_runtime_seconds",
        f"Run times of the tasks that ended in the last {RUNTIME_WINDOW} s, by type.",
        labels=["type"],
    )
    recent = (
        TaskInstance.objects.order_by()
        .filter(
            type_id__in=list(names),  # the retention index's leading column
            status__in=sorted(TERMINAL),
            finished_at__gte=now - timedelta(seconds=RUNTIME_WINDOW),
            started_at__isnull=False,
        )
        .values_list("type_id", "started_at", "finished_at")
    )
    runtimes: dict[int, list[float]] = {}
    for type_id, started, finished in recent.iterator(chunk_size=2000):
        runtimes.setdefault(type_id, []).append(max(0.0, (finished - started).total_seconds()))
    for type_id, values in sorted(runtimes.items()):
        buckets = [
            (floatToGoString(bound), sum(1 for value in values if value <= bound))
            for bound in RUNTIME_BUCKETS
        ]
        buckets.append(("+Inf", len(values)))
        family.add_metric([names[type_id]], buckets, gsum_value=sum(values))
    return family


def render() -> bytes:
    """Every family in Prometheus's text format, freshly read from the database."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector())
    return generate_latest(registry)
