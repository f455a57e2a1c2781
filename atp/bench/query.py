"""Benchmark of ``atp.query`` on a large history: fill the database fast, time common reads.

``fill(n)`` makes sure at least ``n`` benchmark tasks exist (types ``bench.*``), each with
the log records the tracker would have written (task-sent, -received, -started and the
outcome), spread over 30 days and over 8 daemons. On PostgreSQL the rows go in with COPY,
elsewhere with ``bulk_create``, in batches. ``measure()`` times the operator's common
reads and returns p50/p99 in milliseconds. ``manage.py atp_bench_query`` runs both.
"""

import csv
import hashlib
import io
import json
import random
import statistics
import time
import uuid
from datetime import timedelta

from django.db import connection, transaction
from django.utils import timezone

from atp import query, sql
from atp.events import call_signature
from atp.models import LogRecord, Status, TaskInstance, TaskType, Worker
from atp.sql import driver

TYPES = ("bench.resize", "bench.thumbnail", "bench.mail", "bench.report")
USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")
DAEMONS = 8
SPAN = timedelta(days=30)
#: (share in percent, status) of the generated tasks: mostly history, some queue.
MIX: tuple[tuple[int, Status], ...] = (
    (80, Status.FINISHED),
    (10, Status.FAILED),
    (3, Status.REVOKED),
    (4, Status.ACCEPTED),
)
MIX += ((1, Status.SCHEDULED), (1, Status.RUNNING), (1, Status.PAUSED))
TASK_COLUMNS = (
    "id type_id identifier uuid status input priority queue run_after expires server_id "
    "attempts retries progress enqueued_at received_at started_at finished_at updated_at"
).split()
LOG_COLUMNS = "instance_id time status message event fields".split()


def _status_of(n: int) -> Status:
    bucket = (n * 7919) % 100
    for share, status in MIX:
        if bucket < share:
            return status
        bucket -= share
    return Status.FINISHED


def _task_rows(n: int, task_id: int, type_ids: list[int], start):
    """The task row and its log rows (as column dicts) of benchmark task number ``n``."""
    status = _status_of(n)
    type_index = n % len(TYPES)
    path = f"/data/scene-{n:08d}.tif"
    if TYPES[type_index] == "bench.thumbnail":
        task_input: list | dict = [path, 64 << (n % 3)]
    else:
        task_input = {"path": path, "band": n % 13, "user": USERS[n % len(USERS)]}
    digest = hashlib.md5(f"atp-bench-{n}".encode(), usedforsecurity=False).digest()
    task_uuid = uuid.UUID(bytes=digest, version=4)
    enqueued = start + SPAN * ((n * 7) % 1000003 / 1000003)
    claimed = status not in (Status.ACCEPTED, Status.REVOKED)
    began = claimed and status != Status.SCHEDULED
    ended = status in (Status.FINISHED, Status.FAILED, Status.REVOKED)
    received = enqueued + timedelta(seconds=1) if claimed else None
    started = enqueued + timedelta(seconds=2) if began else None
    finished = None
    if ended:
        finished = (started or enqueued) + timedelta(seconds=n % 60 + 0.5)
    server_id = f"0x{n % DAEMONS:016X}" if claimed else ""
    task = dict(
        id=task_id,
        type_id=type_ids[type_index],
        identifier=f"job-{n:08d}",
        uuid=task_uuid,
        status=status.value,
        input=task_input,
        priority=0,
        queue="default",
        run_after=enqueued,
        expires=None,
        server_id=server_id,
        attempts=1 if began else 0,
        retries=0,
        progress=None,
        enqueued_at=enqueued,
        received_at=received,
        started_at=started,
        finished_at=finished,
        updated_at=finished or started or received or enqueued,
    )
    base = {"uuid": str(task_uuid), "hostname": "atp@bench", "pid": 1}
    args, kwargs = call_signature(task_input)
    sent = {**base, "name": TYPES[type_index], "args": args, "kwargs": kwargs}
    sent.update(identifier=f"job-{n:08d}", root_id=str(task_uuid), parent_id=None)
    logs = [(enqueued, Status.ACCEPTED, "task-sent", sent)]
    if received:
        received_fields = {**base, "args": args, "server_id": server_id}
        logs.append((received, Status.SCHEDULED, "task-received", received_fields))
    if started:
        logs.append((started, Status.RUNNING, "task-started", dict(base)))
    if status == Status.FINISHED:
        result = repr({"pixels": n * 37 % 100000, "user": USERS[n % len(USERS)]})
        logs.append((finished, status, "task-succeeded", {**base, "result": result}))
    elif status == Status.FAILED:
        error = f"OSError: disk full writing {path}"
        trace = f"Traceback (most recent call last):\n  File 'resize.py'\n{error}"
        fields = {**base, "exception": error, "traceback": trace}
        logs.append((finished, status, "task-failed", fields))
    elif status == Status.REVOKED:
        fields = {**base, "terminated": False, "signum": None, "expired": True}
        logs.append((finished, status, "task-revoked", fields))
    log_rows = [
        dict(instance_id=task_id, time=t, status=s.value, message="", event=e, fields=f)
        for t, s, e, f in logs
    ]
    return task, log_rows


def _prepare():
    """The benchmark types (created if missing), as ids in ``TYPES`` order; and the daemons."""
    type_ids = []
    for identifier in TYPES:
        task_type, _ = TaskType.objects.get_or_create(
            identifier=identifier, defaults={"handler": "atp.examples.add"}
        )
        type_ids.append(task_type.pk)
    for n in range(DAEMONS):
        Worker.objects.get_or_create(
            server_id=f"0x{n:016X}", defaults={"hostname": f"node-{n}", "pid": 1000 + n}
        )
    return type_ids


def fill(tasks: int, batch: int = 50_000, progress=None) -> int:
    """Make sure at least ``tasks`` benchmark tasks exist; return how many were added."""
    type_ids = _prepare()
    have = TaskInstance.objects.filter(type_id__in=type_ids).count()
    start = timezone.now() - SPAN
    added = 0
    while have + added < tasks:
        count = min(batch, tasks - have - added)
        with transaction.atomic():
            first_id = _reserve_ids(count)
            rows = [
                _task_rows(have + added + i, first_id + i, type_ids, start) for i in range(count)
            ]
            _insert(TaskInstance, TASK_COLUMNS, [task for task, _ in rows])
            _insert(LogRecord, LOG_COLUMNS, [log for _, logs in rows for log in logs])
        added += count
        if progress:
            progress(have + added)
    if added and sql.is_postgresql():
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE atp_taskinstance")
            cursor.execute("ANALYZE atp_logrecord")
    return added


def _reserve_ids(count: int) -> int:
    """The first of ``count`` task ids nobody else will get (moves the id sequence on)."""
    if sql.is_postgresql():
        with connection.cursor() as cursor:
            cursor.execute("LOCK TABLE atp_taskinstance IN SHARE ROW EXCLUSIVE MODE")
            cursor.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM atp_taskinstance")
            first = cursor.fetchone()[0]
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence('atp_taskinstance', 'id'), %s)",
                [first + count - 1],
            )
            return first
    last = TaskInstance.objects.order_by("-id").values_list("id", flat=True).first() or 0
    return last + 1


def _insert(model, columns, rows) -> None:
    if not sql.is_postgresql():
        model.objects.bulk_create([model(**row) for row in rows], batch_size=500)
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in rows:
        writer.writerow([_csv_value(row[column]) for column in columns])
    buffer.seek(0)
    table = model._meta.db_table
    with connection.cursor() as cursor:
        driver.copy_from(
            cursor,
            f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv, NULL '\\N')",
            buffer,
        )


def _csv_value(value):
    if value is None:
        return "\\N"  # the NULL marker of the COPY; "" stays an empty string
    if isinstance(value, dict | list):
        return json.dumps(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


# --- measuring ----------------------------------------------------------------------------


def _page(**filters):
    return [query.as_dict(task) for task in query.iter_tasks(**filters)]


def cases(rng: random.Random, tasks: int, first_id: int) -> dict:
    """The timed operations: name → a function making one call with random arguments."""

    def by_id():
        task = query.get_task_by_id(rng.randrange(first_id, first_id + tasks))
        return task and query.as_dict(task)

    return {
        "state+type, sorted by received, first 100": lambda: _page(
            state=rng.choice(("SUCCESS", "FAILURE")),
            type=rng.choice(TYPES),
            sort_by="-received",
            limit=100,
        ),
        "search by identifier": lambda: _page(search=f"job-{rng.randrange(tasks):08d}", limit=100),
        "free-text search (10 matches)": lambda: _page(
            search=f"scene-{rng.randrange(max(1, tasks // 10)):07d}", limit=100
        ),
        "get_task_by_id": by_id,
    }


def measure(tasks: int, repeat: int = 200, warmup: int = 5, seed: int = 1) -> dict:
    """Time each case ``repeat`` times (after ``warmup`` calls); name → (p50, p99) in ms."""
    rng = random.Random(seed)  # noqa: S311 - picks benchmark inputs, not secrets
    bench = TaskInstance.objects.filter(type__identifier__in=TYPES).order_by("id")
    first_id = bench.values_list("id", flat=True).first() or 1
    results = {}
    for name, call in cases(rng, tasks, first_id).items():
        for _ in range(warmup):
            call()
        timings = []
        for _ in range(repeat):
            began = time.perf_counter()
            call()
            timings.append((time.perf_counter() - began) * 1000)
        results[name] = (statistics.median(timings), _percentile(timings, 99))
    return results


def _percentile(values, percent: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(percent / 100 * len(ordered)) - 1))
    return ordered[index]
