"""Flower-style read API over the whole task history: filters, search, sorting, paging in SQL.

Flower filters an in-memory window of at most 10,000 tasks; ATP runs the same filters as
one SQL query over every task in the database. Nothing here loads all tasks: a page of
tasks with everything ``as_dict`` shows is one query, and iterating without a limit
streams rows in chunks.
"""

import functools
import json
import uuid
from collections.abc import Iterator
from datetime import datetime

from django.db.models import (
    Case,
    DurationField,
    ExpressionWrapper,
    F,
    Field,
    JSONField,
    OuterRef,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.utils import timezone

from atp import events, validation
from atp.exceptions import InvalidInput
from atp.models import LogRecord, Status, TaskInstance, TaskType, Worker
from atp.query.search import parse_search_terms, satisfies_search_terms, search_q
from atp.query.states import CELERY_STATE, state_name, statuses_for

__all__ = [
    "SORT_KEYS",
    "as_dict",
    "filter_tasks",
    "get_task_by_id",
    "iter_tasks",
    "parse_search_terms",
    "satisfies_search_terms",
    "sort_tasks",
    "with_details",
]

#: Keys ``sort_by`` accepts (prefix ``-`` for descending), as in Flower.
SORT_KEYS = ("name", "state", "received", "started", "runtime", "worker")
#: Formats of time bounds given as text: Flower's, then ISO 8601.
TIME_FORMATS = ("%Y-%m-%d %H:%M",)
#: Events whose fields hold a task's outcome (result, exception, traceback).
OUTCOME_EVENTS = (events.TASK_SUCCEEDED, events.TASK_FAILED, events.TASK_REVOKED)
#: Rows fetched per round trip when iterating without a limit.
CHUNK_SIZE = 500
#: Largest limit or offset: 2**53, the largest integer every JSON client reads exactly (and
#: far inside the 64-bit LIMIT/OFFSET of the databases, even added together).
MAX_INDEX = 2**53
#: Largest task id (the id column is a 64-bit integer).
MAX_ID = 2**63 - 1


def filter_tasks(
    type=None,
    worker=None,
    state=None,
    received_start=None,
    received_end=None,
    started_start=None,
    started_end=None,
    search=None,
) -> QuerySet:
    """Tasks matching every given filter, as an unordered QuerySet.

    Parameters: ``type`` (task type identifier(s), exact), ``worker`` (the claiming daemon:
    its server id or its Worker host name, exact), ``state`` (Celery or ATP state name(s):
    ``"SUCCESS"`` or ``"FINISHED"``), ``received_start``/``received_end`` and
    ``started_start``/``started_end`` (inclusive bounds: datetimes, epoch seconds, or text
    ``"%Y-%m-%d %H:%M"``/ISO 8601 in the current time zone; a task without that time does not
    match a bound), ``search`` (a query, see ``atp.query.search``). Raises InvalidInput.
    """
    tasks = TaskInstance.objects.all()
    if type is not None:
        # Types are few: resolving them first lets PostgreSQL walk one (type, status,
        # received) index in order for a single type, instead of planning a semi-join.
        names = _names(type, "type")
        type_ids = TaskType.objects.filter(identifier__in=names).values_list("pk", flat=True)
        tasks = tasks.filter(type_id__in=list(type_ids))
    if worker is not None:
        tasks = tasks.filter(server_id__in=_server_ids(worker))
    if state is not None:
        codes = set().union(*(statuses_for(name) for name in _as_list(state)))
        tasks = tasks.filter(status__in=sorted(codes))
    for field, start, end in (
        ("received_at", received_start, received_end),
        ("started_at", started_start, started_end),
    ):
        if start is not None:
            tasks = tasks.filter(**{f"{field}__gte": parse_time(start, field)})
        if end is not None:
            tasks = tasks.filter(**{f"{field}__lte": parse_time(end, field)})
    if search:
        tasks = tasks.filter(search_q(parse_search_terms(search)))
    return tasks


def _as_list(value) -> list:
    """One filter value, or an iterable of them, as a list."""
    if isinstance(value, str | int | TaskType):
        return [value]
    return list(value)


def _names(value, what: str) -> list[str]:
    """A type or worker filter as a list of names the databases can compare."""
    return [validation.text(str(item), f"{what} filter") for item in _as_list(value)]


def _server_ids(worker) -> list[str]:
    """The server ids a worker filter stands for: itself, and the daemons on that host."""
    names = _names(worker, "worker")
    hosted = Worker.objects.filter(hostname__in=names).values_list("server_id", flat=True)
    return sorted(set(names) | set(hosted))


def parse_time(value, name="time") -> datetime:
    """An aware datetime from a datetime, epoch seconds, or text in Flower's or ISO format.

    Naive values are in the current time zone (Django's ``TIME_ZONE``), as Flower reads them
    in local time. Times outside ``validation.MIN_MOMENT``..``MAX_MOMENT`` are refused: the
    databases could not compare them (SQLite's adapter converts them to UTC first).
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            value = datetime.fromtimestamp(value, tz=timezone.get_current_timezone())
        except (OverflowError, OSError, ValueError):
            raise InvalidInput(f"{name} {value!r} is not a time in epoch seconds") from None
    if isinstance(value, str):
        text = value.strip()
        parsed = None
        for fmt in TIME_FORMATS:
            try:
                parsed = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
        if parsed is None:
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                raise InvalidInput(
                    f"{name} {value!r} is not a time; use 'YYYY-MM-DD HH:MM' or ISO 8601"
                ) from None
        value = parsed
    if not isinstance(value, datetime):
        raise InvalidInput(f"{name} must be a datetime, epoch seconds or text, not {value!r}")
    if timezone.is_naive(value):
        value = timezone.make_aware(value)
    return validation.within_range(value, name)


def sort_tasks(tasks: QuerySet, sort_by) -> QuerySet:
    """Order a task QuerySet by a Flower sort key (``-`` prefix: descending).

    Keys: name, state (as Celery state text), received, started, runtime, worker. As in
    Flower, a missing value sorts as the smallest (first ascending, last descending); ties
    are broken by id in the same direction. ``None`` orders newest task first. An unknown
    key raises InvalidInput.
    """
    if not sort_by:
        return tasks.order_by("-id")
    descending = sort_by.startswith("-")
    key = sort_by.lstrip("-")
    if key not in SORT_KEYS:
        raise InvalidInput(f"cannot sort by {sort_by!r}; sort keys: {', '.join(SORT_KEYS)}")
    expression = _sort_expression(key)
    if descending:
        return tasks.order_by(expression.desc(nulls_last=True), F("id").desc())
    return tasks.order_by(expression.asc(nulls_first=True), F("id").asc())


def _sort_expression(key: str):
    if key == "name":
        return F("type__identifier")
    if key == "state":
        # Flower sorts state names as text; status codes are in another order.
        whens = [When(status=status, then=Value(name)) for status, name in CELERY_STATE.items()]
        return Case(*whens, default=Value(""))
    if key == "runtime":
        return ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
    return F({"received": "received_at", "started": "started_at", "worker": "server_id"}[key])


class ChildUuids(Subquery):
    """The uuids of a task's children in id order, as one column of the task's row.

    PostgreSQL returns an array (a list of UUIDs), SQLite a JSON array of hex strings;
    ``as_dict`` reads both. One column instead of a prefetch query keeps a single task's
    lookup to one round trip.
    """

    template = "ARRAY(%(subquery)s)"
    output_field = Field()  # no conversion: each backend's value is read as it comes

    def __init__(self):
        children = TaskInstance.objects.filter(parent=OuterRef("pk")).order_by("id")
        super().__init__(children.values("uuid"))

    def as_sqlite(self, compiler, connection, **extra_context):
        template = "(SELECT JSON_GROUP_ARRAY(uuid) FROM (%(subquery)s))"
        return self.as_sql(compiler, connection, template=template, **extra_context)


@functools.cache
def _details() -> dict:
    """The annotations of ``with_details``, built once (Django copies them on use)."""
    log = LogRecord.objects.filter(instance=OuterRef("pk"))
    outcome = log.filter(event__in=OUTCOME_EVENTS).order_by("-time", "-id").values("fields")
    retried = log.filter(event=events.TASK_RETRIED).order_by("-time", "-id").values("time")
    sent = log.filter(event=events.TASK_SENT).order_by("time", "id").values("fields")
    hostname = Worker.objects.filter(server_id=OuterRef("server_id")).values("hostname")
    return {
        "atp_name": F("type__identifier"),
        "atp_outcome": Subquery(outcome[:1], output_field=JSONField()),
        "atp_retried_at": Subquery(retried[:1]),
        "atp_sent": Subquery(sent[:1], output_field=JSONField()),
        "atp_hostname": Subquery(hostname[:1]),
        "atp_parent_uuid": F("parent__uuid"),
        "atp_children": ChildUuids(),
    }


def with_details(tasks: QuerySet) -> QuerySet:
    """Add to each task what ``as_dict`` shows from other tables, without a query per task.

    The type's name, the outcome (result, exception, traceback), the last retry time, the
    call as sent (args and kwargs reprs, root id), the daemon's host name, the parent's and
    the children's uuids all come with the task's row, from joins and subqueries (on
    PostgreSQL the subqueries run only for the rows returned, after sorting and paging).
    """
    return tasks.annotate(**_details())


def _uuids(value) -> list[str]:
    """Children uuids as ``ChildUuids`` delivers them, as canonical text."""
    if isinstance(value, str):
        value = json.loads(value)
    return [str(item if isinstance(item, uuid.UUID) else uuid.UUID(item)) for item in value or ()]


def iter_tasks(
    limit=None,
    offset=0,
    type=None,
    worker=None,
    state=None,
    sort_by=None,
    received_start=None,
    received_end=None,
    started_start=None,
    started_end=None,
    search=None,
) -> Iterator[TaskInstance]:
    """Iterate over the tasks that match the filters, sorted and paged, Flower style.

    Filters as in ``filter_tasks``; ``sort_by`` as in ``sort_tasks``; ``offset`` tasks are
    skipped and at most ``limit`` returned (None: all, streamed in chunks). The arguments
    are checked now (InvalidInput), not at the first iteration. Each task carries what
    ``as_dict`` needs, so ``as_dict`` makes no further query.
    """
    offset = _count(offset, "offset")
    limit = None if limit is None else _count(limit, "limit")
    tasks = filter_tasks(
        type=type,
        worker=worker,
        state=state,
        received_start=received_start,
        received_end=received_end,
        started_start=started_start,
        started_end=started_end,
        search=search,
    )
    tasks = with_details(sort_tasks(tasks, sort_by))
    if limit is None:
        return tasks[offset:].iterator(chunk_size=CHUNK_SIZE)
    return iter(tasks[offset : offset + limit])


def _count(value, name: str) -> int:
    """A limit or offset: a non-negative int (or ASCII digits) up to ``MAX_INDEX``."""
    if validation.ascii_int(value) is not None:
        value = validation.ascii_int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"{name} must be a non-negative integer, not {value!r}")
    if value > MAX_INDEX:
        raise InvalidInput(f"{name} must be at most {MAX_INDEX}, not {value}")
    return value


def get_task_by_id(task_id) -> TaskInstance | None:
    """The task with this id (an int or digits) or uuid (UUID or text), with details; or None."""
    if isinstance(task_id, TaskInstance):
        task_id = task_id.pk
    lookup = task_lookup(task_id)
    if lookup is None:
        return None
    found = list(_detailed_tasks().filter(**lookup).order_by()[:1])
    return found[0] if found else None


@functools.cache
def _detailed_tasks() -> QuerySet:
    # Resolving the annotations costs more than the lookup itself; a filtered clone of
    # this never-evaluated QuerySet reuses them.
    return with_details(TaskInstance.objects.all())


def task_lookup(task_id) -> dict | None:
    """Filter arguments finding a task by id (int, digits) or uuid (UUID, text); None if neither."""
    if isinstance(task_id, uuid.UUID):
        return {"uuid": task_id}
    if isinstance(task_id, int) and not isinstance(task_id, bool):
        return {"pk": task_id} if abs(task_id) <= MAX_ID else None
    if isinstance(task_id, str):
        text = task_id.strip()
        number = validation.ascii_int(text)
        if number is not None:
            # Past the id column's 64 bits no task can match (and the query would fail).
            return {"pk": number} if number <= MAX_ID else None
        try:
            return {"uuid": uuid.UUID(text)}
        except ValueError:
            return None
    return None


def _epoch(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment else None


def as_dict(task: TaskInstance) -> dict:
    """A task as Flower's task info dict (Celery's field names), plus ATP's own fields.

    Times (received, started, succeeded, failed, retried, revoked, timestamp) are epoch
    seconds; eta and expires ISO 8601; args, kwargs and result Celery's repr strings.
    ``worker`` is the claiming daemon's server id, ``hostname`` its host when it registered.
    A task not loaded by ``iter_tasks``/``get_task_by_id`` is reloaded with its details.
    """
    if not hasattr(task, "atp_outcome"):
        task = get_task_by_id(task.pk)  # type: ignore[assignment]
    status = Status(task.status)
    outcome = task.atp_outcome or {}  # type: ignore[attr-defined]
    sent = task.atp_sent or {}  # type: ignore[attr-defined]
    if "args" in sent and "kwargs" in sent:
        # The reprs made at enqueue: PostgreSQL's jsonb reorders the input's keys.
        args, kwargs = sent["args"], sent["kwargs"]
    else:
        args, kwargs = events.call_signature(task.input)
    ended = _epoch(task.finished_at)
    runtime = None
    if task.started_at and task.finished_at:
        runtime = (task.finished_at - task.started_at).total_seconds()
    return {
        "uuid": str(task.uuid),
        "name": task.atp_name,  # type: ignore[attr-defined]
        "state": state_name(status),
        "hostname": task.atp_hostname or task.server_id or None,  # type: ignore[attr-defined]
        "worker": task.server_id or None,
        "timestamp": _epoch(task.updated_at),
        "sent": _epoch(task.enqueued_at),
        "received": _epoch(task.received_at),
        "started": _epoch(task.started_at),
        "succeeded": ended if status == Status.FINISHED else None,
        "failed": ended if status == Status.FAILED else None,
        "retried": _epoch(task.atp_retried_at),  # type: ignore[attr-defined]
        "revoked": ended if status == Status.REVOKED else None,
        "runtime": runtime,
        "args": args,
        "kwargs": kwargs,
        "result": outcome.get("result") if status == Status.FINISHED else None,
        "exception": outcome.get("exception") if status == Status.FAILED else None,
        "traceback": outcome.get("traceback") if status == Status.FAILED else None,
        "retries": task.retries,
        "eta": task.run_after.isoformat() if task.run_after > task.enqueued_at else None,
        "expires": task.expires.isoformat() if task.expires else None,
        "queue": task.queue,
        "priority": task.priority,
        "root_id": sent.get("root_id") or _root_fallback(task),
        "parent_id": str(task.atp_parent_uuid) if task.atp_parent_uuid else None,  # type: ignore[attr-defined]
        "children": _uuids(task.atp_children),  # type: ignore[attr-defined]
        # ATP's own fields.
        "id": task.pk,
        "identifier": task.identifier,
        "status": status.label,
        "status_code": status.value,
        "progress": task.progress,
        "items": _items(task.progress),
        "attempts": task.attempts,
    }


def _items(progress) -> dict | None:
    """A parent's item totals (``TaskStatus.add_item_counts`` of its subtasks), else None."""
    items = progress.get("items") if isinstance(progress, dict) else None
    return dict(items) if isinstance(items, dict) else None


def _root_fallback(task) -> str:
    """Root id of a task without a task-sent record (rows written outside the tracker)."""
    return str(task.atp_parent_uuid or task.uuid)


def get_workflow(workflow_id) -> dict:
    """A workflow as one thing: its state, counts and progress (``atp.workflows``)."""
    from atp.query.workflows import workflow_state

    return workflow_state(workflow_id)
