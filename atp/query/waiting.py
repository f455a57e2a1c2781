"""Why a waiting task has not started: due later, paused, its concurrency key or rate full,
or (BLOCKED) the tasks it depends on.

Read-only: the claim decides (``atp.tracker.claiming``); this explains the same rules on a
task's admin page and in the task list's filter.
"""

from datetime import timedelta

from django.db.models import Count, F, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from atp.models import ACTIVE, TERMINAL, QueuePause, Status, TaskInstance, TaskType
from atp.tracker.concurrency import active_of_key
from atp.tracker.ratelimit import parse_rate

#: The reasons a task waits, as (filter value, label).
REASONS = (
    ("later", "due later"),
    ("queue", "queue paused"),
    ("type", "task type paused"),
    ("concurrency", "concurrency key full"),
    ("rate", "rate limit used up"),
    ("dependencies", "waiting for dependencies"),
)


def reasons(task, now=None) -> list[str]:
    """Why ``task`` waits, in words; empty when it is not waiting or nothing holds it back."""
    if task.status == Status.BLOCKED:
        pending = task.dependencies.exclude(depends_on__status__in=sorted(TERMINAL))
        return [f"waiting for {pending.count()} task(s) it depends on to end"]
    if task.status != Status.ACCEPTED:
        return []
    now = now or timezone.now()
    found = []
    if task.run_after > now:
        found.append(f"due later, at {timezone.localtime(task.run_after):%Y-%m-%d %H:%M:%S}")
    if QueuePause.objects.filter(queue=task.queue).exists():
        found.append(f"queue {task.queue!r} is paused")
    if task.type.paused:
        found.append(f"task type {task.type.identifier!r} is paused")
    limit = task.type.concurrency_limit
    if limit is not None:
        running = active_of_key(task.type_id, task.concurrency_key).count()
        if running >= limit:
            key = "(none)" if task.concurrency_key is None else repr(task.concurrency_key)
            found.append(f"concurrency key {key} is full: {running} of {limit} places taken")
    if task.type_id in rate_limited_types(now):
        found.append(f"rate limit {task.type.rate_limit} is used up")
    return found


def filter_tasks(tasks, reason: str, now=None):
    """The waiting tasks among ``tasks`` that ``reason`` (a value of ``REASONS``) holds back."""
    now = now or timezone.now()
    if reason == "dependencies":
        return tasks.filter(status=Status.BLOCKED)
    waiting = tasks.filter(status=Status.ACCEPTED)
    if reason == "later":
        return waiting.filter(run_after__gt=now)
    if reason == "queue":
        return waiting.filter(queue__in=QueuePause.objects.values("queue"))
    if reason == "type":
        return waiting.filter(type__paused=True)
    if reason == "concurrency":
        taken = (
            TaskInstance.objects.filter(type_id=OuterRef("type_id"), status__in=sorted(ACTIVE))
            .annotate(key=Coalesce("concurrency_key", Value("")))
            .filter(key=Coalesce(OuterRef("concurrency_key"), Value("")))
            .order_by()
            .values("type_id")
            .annotate(n=Count("pk"))
            .values("n")
        )
        return (
            waiting.filter(type__concurrency_limit__isnull=False)
            .annotate(places_taken=Coalesce(Subquery(taken), 0))
            .filter(places_taken__gte=F("type__concurrency_limit"))
        )
    if reason == "rate":
        return waiting.filter(type_id__in=rate_limited_types(now))
    raise ValueError(f"unknown reason {reason!r}")


def rate_limited_types(now=None) -> set[int]:
    """Ids of the types whose rate-limit window is full now (no lock: a report)."""
    now = now or timezone.now()
    full = set()
    for type_id, rate in TaskType.objects.exclude(rate_limit="").values_list("id", "rate_limit"):
        limit = parse_rate(rate)
        if limit is None:
            continue
        count, period = limit
        window = TaskInstance.objects.filter(
            type_id=type_id, received_at__gt=now - timedelta(seconds=period)
        )
        if window.order_by().values("pk")[:count].count() >= count:
            full.add(type_id)
    return full
