"""The numbers the dashboard and the task type list show, each from one indexed query."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import BooleanField, Count, ExpressionWrapper, Min, Q
from django.db.models.functions import TruncMinute
from django.utils import timezone

from atp import sql
from atp.models import TERMINAL, Status, TaskInstance, TaskType, Worker

#: Above this many task rows (PostgreSQL's estimate), ended tasks are not counted row by
#: row on each page load: their counts come from the planner's statistics instead.
EXACT_ROWS_LIMIT = 200_000


@dataclass
class Counts:
    """Tasks per type and status; ``estimated`` says whether ended counts are estimates."""

    by_type: dict[int, dict[int, int]]
    estimated: bool = False

    def of(self, type_id) -> dict[int, int]:
        """``{status: count}`` of one type."""
        return self.by_type.get(type_id, {})

    def totals(self) -> dict[int, int]:
        """``{status: count}`` over all types, every status present."""
        totals: dict[int, int] = {status: 0 for status in Status}
        for per_status in self.by_type.values():
            for status, n in per_status.items():
                totals[status] += n
        return totals


def counts_by_type(type_ids=None) -> Counts:
    """Tasks per type and status, cheap however big the table is.

    Small tables: one exact GROUP BY. On a PostgreSQL table above ``EXACT_ROWS_LIMIT`` rows,
    tasks that have not ended are still counted exactly (from the partial indexes of the
    queue and the active tasks) but ended ones are estimated from ``pg_stats`` (row estimate
    × the type's share × the status's share), so no page load scans the whole history.
    """
    table = TaskInstance._meta.db_table
    rows = sql.estimated_table_rows(table)
    if rows is None or rows <= EXACT_ROWS_LIMIT:
        tasks = TaskInstance.objects.order_by()
        if type_ids is not None:
            tasks = tasks.filter(type_id__in=list(type_ids))
        return Counts(_group(tasks))
    counts = live_counts_by_type(type_ids)
    type_share = sql.column_frequencies(table, "type_id")
    status_share = sql.column_frequencies(table, "status")
    for type_id, share in type_share.items():
        if type_ids is not None and type_id not in type_ids:
            continue
        for status in TERMINAL:
            estimate = round(rows * share * status_share.get(status, 0.0))
            if estimate:
                counts.setdefault(type_id, {})[status] = estimate
    return Counts(counts, estimated=True)


def _group(tasks) -> dict[int, dict[int, int]]:
    counts: dict[int, dict[int, int]] = {}
    for type_id, status, n in tasks.values_list("type_id", "status").annotate(n=Count("pk")):
        counts.setdefault(type_id, {})[status] = n
    return counts


def live_counts_by_type(type_ids=None) -> dict[int, dict[int, int]]:
    """Exact ``{type id: {status: count}}`` of the tasks that have not ended.

    The condition is the predicate of the partial index ``atp_task_live``, so PostgreSQL
    reads only that small index, never the table's history.
    """
    tasks = TaskInstance.objects.order_by().live()
    if type_ids is not None:
        tasks = tasks.filter(type_id__in=list(type_ids))
    return _group(tasks)


@dataclass
class Bucket:
    """Tasks that ended in one minute."""

    start: datetime
    finished: int = 0
    failed: int = 0
    revoked: int = 0

    @property
    def total(self) -> int:
        """Every task that ended in this minute."""
        return self.finished + self.failed + self.revoked


def throughput(now=None, minutes=60) -> list[Bucket]:
    """Tasks ended per minute over the last ``minutes``, oldest first, zeros included.

    Filters on ``type IN (every type)`` and ``finished_at``: the leading columns of the
    retention index, so only the window's rows are read however long the history is.
    """
    now = now or timezone.now()
    start = (now - timedelta(minutes=minutes - 1)).replace(second=0, microsecond=0)
    buckets = {
        start + timedelta(minutes=i): Bucket(start + timedelta(minutes=i)) for i in range(minutes)
    }
    type_ids = list(TaskType.objects.values_list("pk", flat=True))
    rows = (
        TaskInstance.objects.order_by()
        .filter(
            type_id__in=type_ids,
            status__in=[Status.FINISHED, Status.FAILED, Status.REVOKED],
            finished_at__gte=start,
        )
        .annotate(minute=TruncMinute("finished_at"))
        .values_list("minute", "status")
        .annotate(n=Count("pk"))
    )
    names = {Status.FINISHED: "finished", Status.FAILED: "failed", Status.REVOKED: "revoked"}
    for minute, status, n in rows:
        bucket = buckets.get(minute)
        if bucket is not None:
            setattr(bucket, names[status], getattr(bucket, names[status]) + n)
    return list(buckets.values())


def oldest_waiting(now=None):
    """The waiting task that has been *due* longest (``run_after`` in the past), or None.

    Tasks scheduled ahead (``run_after`` later than now) are not late, so they are left out:
    a healthy queue full of tomorrow's work must not look stuck.
    """
    now = now or timezone.now()
    return (
        TaskInstance.objects.waiting()
        .filter(run_after__lte=now)
        .select_related("type")
        .order_by("run_after", "pk")
        .first()
    )


@dataclass
class QueueDepth:
    """One queue: due tasks waiting, tasks scheduled ahead, and since when the oldest is due."""

    queue: str
    due: int = 0
    ahead: int = 0
    oldest_due: datetime | None = None


def queue_depths(now=None) -> list[QueueDepth]:
    """Waiting tasks per queue, due and scheduled ahead, with the oldest due time.

    Reads only ACCEPTED rows (the claim's partial index), never the ended history.
    """
    now = now or timezone.now()
    depths: dict[str, QueueDepth] = {}
    rows = (
        TaskInstance.objects.waiting()
        .order_by()
        .annotate(is_due=ExpressionWrapper(Q(run_after__lte=now), output_field=BooleanField()))
        .values_list("queue", "is_due")
        .annotate(n=Count("pk"), since=Min("run_after"))
    )
    for queue, is_due, n, since in rows:
        depth = depths.setdefault(queue, QueueDepth(queue))
        if is_due:
            depth.due, depth.oldest_due = n, since
        else:
            depth.ahead = n
    return sorted(depths.values(), key=lambda depth: depth.queue)


#: How far back the run-time percentiles look, and how many tasks per type they read at most.
RUNTIME_WINDOW = timedelta(hours=1)
RUNTIME_SAMPLE = 2000


@dataclass
class Runtimes:
    """Run-time percentiles (seconds) of one type's recently ended tasks."""

    type: str
    count: int
    p50: float
    p95: float
    max: float


def _percentile(ordered: list[float], share: float) -> float:
    """The nearest-rank percentile of an ascending list."""
    rank = max(1, round(share * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def runtime_percentiles(now=None) -> list[Runtimes]:
    """p50/p95/max run time per type over the tasks that ended in the last hour.

    Per type, at most the ``RUNTIME_SAMPLE`` latest ended tasks are read (the retention
    index: type, finished_at), so a busy type costs a bounded read.
    """
    now = now or timezone.now()
    result = []
    for type_id, identifier in TaskType.objects.values_list("pk", "identifier"):
        pairs = (
            TaskInstance.objects.filter(
                type_id=type_id,
                status__in=sorted(TERMINAL),
                finished_at__gte=now - RUNTIME_WINDOW,
                started_at__isnull=False,
            )
            .order_by("-finished_at")
            .values_list("started_at", "finished_at")[:RUNTIME_SAMPLE]
        )
        values = sorted(max(0.0, (end - start).total_seconds()) for start, end in pairs)
        if values:
            result.append(
                Runtimes(
                    identifier,
                    len(values),
                    _percentile(values, 0.5),
                    _percentile(values, 0.95),
                    values[-1],
                )
            )
    return result


def live_workers(timeout):
    """Daemons with a heartbeat within ``timeout`` seconds, with their running task count."""
    workers = list(Worker.objects.alive(timezone.now() - timedelta(seconds=timeout)))
    running = dict(
        TaskInstance.objects.active()
        .order_by()
        .filter(server_id__in=[worker.server_id for worker in workers])
        .values_list("server_id")
        .annotate(n=Count("pk"))
    )
    for worker in workers:
        worker.running_tasks = running.get(worker.server_id, 0)
    return workers


def running_by_server(server_ids) -> dict[str, int]:
    """``{server id: tasks it owns}`` for the given daemons (the active-owner index)."""
    return dict(
        TaskInstance.objects.active()
        .order_by()
        .filter(server_id__in=list(server_ids))
        .values_list("server_id")
        .annotate(n=Count("pk"))
    )


#: Lost daemons are shown on the dashboard for this long after their last heartbeat.
LOST_WINDOW = timedelta(hours=24)


def lost_workers(timeout, now=None, limit=10):
    """Daemons that stopped heart-beating (not stopped cleanly) in the last day, newest first."""
    now = now or timezone.now()
    return list(
        Worker.objects.lost(now - timedelta(seconds=timeout))
        .filter(heartbeat_at__gte=now - LOST_WINDOW)
        .order_by("-heartbeat_at")[:limit]
    )
