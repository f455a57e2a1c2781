"""ATP's benchmark: enqueue rates, drain throughput, idle latency and backlog scaling.

Every figure comes from real work on the configured database: daemons are started as
subprocesses (``manage.py atpd``), their tasks are counted and timed from the rows they
wrote, and each measurement is repeated ``runs`` times so the report gives medians.
Run it on a database of its own: its daemons would run any other waiting task, so it
refuses to start while tasks of other types are due.

enqueue
    ``tracker.enqueue_task`` once per task (``tasks // 5`` tasks), and
    ``tracker.enqueue_tasks`` in calls of ``BATCH`` tasks (``2 × tasks``): tasks/s.
drain
    ``tasks`` no-op tasks enqueued beforehand, then one ``atpd --burst -n N --pool P`` per
    variant. ``wall_s``: from launching the daemon to the last ``finished_at`` of the
    drained tasks (start-up included, exit not); ``wall_per_s`` = tasks / ``wall_s``.
    ``steady_per_s`` = (tasks − k) / (t_last − t_k), with t_i the i-th ``finished_at`` in
    order and k = ⌈5 % of tasks⌉: the rate once the daemon is warm, without the ~1 s
    start-up (fork server, Django set-up in the children) that dominates a short drain.
    ``startup_s``: launch → first task claimed (its ``started_at``); ``exit_s``: launch →
    process exit. The run fails unless every task is counted FINISHED in the database.
    ``commits_per_task``: PostgreSQL's ``pg_stat_database.xact_commit`` over the run,
    divided by tasks (every commit in the database counts, so keep it otherwise idle);
    None on SQLite. Times are this host's clock, as the daemon writes them.
latency
    An idle ``atpd -n 2``; tasks enqueued one at a time ``gap`` (20 ms) apart; the handler
    stores ``time.time()`` when it starts; enqueue→handler-start p50/p95/p99 in ms.
backlog
    ``backlog_tasks`` measured no-op tasks drained by ``atpd -n 2 --max-tasks
    backlog_tasks`` (process pool) while 1,000 and then 1,000,000 filler tasks wait in the
    same queue: ACCEPTED, due, claimable, but at a lower priority, so the claim must find
    the measured tasks in front of the backlog. ``--max-tasks`` stops the daemon once it
    has claimed that many (no ``--burst``, which would drain the filler too); filler tasks
    it claimed anyway are counted (``filler_claimed``, normally 0). Same drain
    figures as above; ``ratio`` = steady rate with this backlog / with the smallest one
    (target: within 10 %). The filler goes in with one ``INSERT … SELECT`` over
    ``generate_series`` (a recursive CTE on SQLite), without log records (nothing reads
    them), is topped up rather than re-inserted between runs, and is deleted with raw SQL
    at the end (``fill_s``: insert and first VACUUM of each size; ``cleanup_s``: the final
    delete). Before each run ``VACUUM (ANALYZE)`` and a ``CHECKPOINT`` (``ANALYZE`` on
    SQLite, where ``VACUUM`` rewrites the whole file) clear the previous run's dead rows and
    dirty pages, so every run starts from the same state. Other databases than PostgreSQL
    and SQLite skip the section.
claim
    The claim statement alone, now against the one before flow control, interleaved
    (``atp.bench.claim``): median ms per claim of ``claim_batch`` of ``claim_waiting`` tasks,
    client and server side, and their ratios. PostgreSQL only.
"""

import asyncio
import json
import logging
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings as django_settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from atp import tracker
from atp.bench import claim, cleanup, fleet, workflow
from atp.daemon.db import CONNECTION_ERRORS, database_url, drop_all
from atp.models import (
    Dependency,
    LogRecord,
    Response,
    Status,
    TaskInstance,
    TaskType,
    Worker,
    Workflow,
)

logger = logging.getLogger("atp.bench")

MEASURED, STAMP, FILLER, HISTORY = "bench.noop", "bench.stamp", "bench.filler", "bench.history"
ASYNC_SLEEP = "bench.async_sleep"
BENCH_TYPES = {
    MEASURED: "atp.bench.throughput.noop",
    STAMP: "atp.bench.throughput.stamp",
    FILLER: "atp.bench.throughput.noop",
    HISTORY: "atp.bench.throughput.noop",
    ASYNC_SLEEP: "atp.bench.throughput.async_sleep",
}
#: Ended tasks kept in the table for the whole run (see ``fill_history``).
HISTORY_ROWS = 2000
SECTIONS = (
    "enqueue",
    "drain",
    "latency",
    "backlog",
    "workflow",
    "pgbench",
    "async",
    "claim",
    "cleanup",
    "fleet",
)
#: The sections run when none are named: all but the fleet's (minutes of idle daemons).
DEFAULT_SECTIONS = tuple(section for section in SECTIONS if section != "fleet")
#: No-op tasks in the workflow section's chord (plus its callback).
CHORD_TASKS = 1000
#: The async section: tasks, each ``await asyncio.sleep(ASYNC_SECONDS)``, on ``asyncio -n``.
ASYNC_TASKS, ASYNC_SECONDS, ASYNC_CONCURRENCY = 1000, 0.1, 100
DRAIN_VARIANTS = (("processes", 1), ("processes", 2), ("processes", 4), ("threads", 4))
BACKLOG_DAEMON = ("processes", 2)  # the configuration the targets are stated for
BACKLOGS = (1_000, 1_000_000)
BATCH = 5000
WARMUP = 0.05  # share of the first finishes left out of the steady-state rate
PRIORITY = 0  # of the measured tasks (their type's default)
FILLER_PRIORITY = PRIORITY - 1  # so the claim must take every measured task first

# The filler insert, the only raw SQL of the benchmark besides its deletes and VACUUM.
# The series of numbers 1..count and a fresh uuid, per database.
_SERIES = {
    "postgresql": "generate_series(1, %s) AS n",
    "sqlite": "(WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < %s) "
    "SELECT n FROM g)",
}
_NEW_UUID = {"postgresql": "gen_random_uuid()", "sqlite": "lower(hex(randomblob(16)))"}
_TASKS = TaskInstance._meta.db_table
_FILL = (
    "INSERT INTO {table} (type_id, identifier, uuid, status, priority, queue, run_after, "
    "server_id, attempts, retries, enqueued_at, updated_at) "
    "SELECT %s, 'filler-' || (%s + n), {uuid}, %s, %s, %s, %s, '', 0, 0, %s, %s FROM {series}"
)


def noop(task_status, input):
    """The benchmark's no-op handler."""


async def async_sleep(task_status, input):
    """Wait ``input["seconds"]`` without blocking the loop (the async section's handler)."""
    await asyncio.sleep(input["seconds"])


def stamp(task_status, input):
    """Store the time the handler started (epoch seconds) as the response."""
    task_status.store_response(repr(time.time()), "text/plain")


def setup() -> None:
    """Register the benchmark's task types (no queue limit) and delete their old tasks.

    Raises RuntimeError if tasks of other types are due: the benchmark's daemons would
    run them, and they would distort every figure.
    """
    others = TaskInstance.objects.ready().exclude(type__identifier__in=BENCH_TYPES)
    waiting = others.count()
    if waiting:
        raise RuntimeError(
            f"{waiting} task(s) of other types wait in this database; the benchmark's daemons "
            "would run them. Run the benchmark on a database of its own."
        )
    for identifier, handler in BENCH_TYPES.items():
        tracker.register_task_type(
            identifier, handler, max_queue_size=100_000_000, priority=PRIORITY
        )
    reset()
    fill_history()


def fill_history(count: int = HISTORY_ROWS) -> None:
    """Put ``count`` ended (FINISHED) tasks in the task table, as any database in use has.

    Without them every section starts from an empty task table, and its VACUUM (ANALYZE)
    records "no rows": PostgreSQL then plans the foreign-key check of each inserted log
    record as a sequential scan of the task table, keeps that plan for the connection,
    and bulk enqueue slows down with every row (5 times slower over 10,000 tasks, measured
    on a server without autovacuum, which would otherwise re-plan it). Ended tasks are
    never claimed, so they change nothing else. ``run`` analyses the table right after;
    not this function, which tests call inside a transaction: ANALYZE writes statistics in
    place, they would outlive the rollback and change the plans of later tests.
    """
    history = TaskType.objects.get(identifier=HISTORY)
    vendor = connection.vendor
    if vendor not in _SERIES:
        return
    statement = _FILL.format(table=_TASKS, uuid=_NEW_UUID[vendor], series=_SERIES[vendor])
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    params: list[Any] = [
        history.pk,
        0,
        int(Status.FINISHED),
        PRIORITY,
        history.queue,
        now,
        now,
        now,
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement, [*params, count])


def reset(types=tuple(BENCH_TYPES)) -> None:
    """Delete every task of the benchmark's ``types``, with their logs and responses.

    Raw deletes: the ORM's cascade would load a million filler ids into Python first.
    """
    type_ids = list(TaskType.objects.filter(identifier__in=types).values_list("pk", flat=True))
    if not type_ids:
        return
    marks = ", ".join(["%s"] * len(type_ids))
    tasks = f"SELECT id FROM {_TASKS} WHERE type_id IN ({marks})"  # noqa: S608 (our own names)
    with transaction.atomic(), connection.cursor() as cursor:
        for model in (LogRecord, Response):
            table = model._meta.db_table
            cursor.execute(f"DELETE FROM {table} WHERE instance_id IN ({tasks})", type_ids)  # noqa: S608
        # The workflow section's rows that point at these tasks.
        edges, flows = Dependency._meta.db_table, Workflow._meta.db_table
        cursor.execute(
            f"DELETE FROM {edges} WHERE task_id IN ({tasks}) OR depends_on_id IN ({tasks})",  # noqa: S608
            type_ids * 2,
        )
        unlink = f"UPDATE {flows} SET end_task_id = NULL WHERE end_task_id IN ({tasks})"  # noqa: S608
        cursor.execute(unlink, type_ids)
        cursor.execute(f"DELETE FROM {_TASKS} WHERE type_id IN ({marks})", type_ids)  # noqa: S608


def fill(count: int) -> None:
    """Enqueue ``count`` measured no-op tasks with the bulk API, ``BATCH`` per call."""
    for start in range(0, count, BATCH):
        tracker.enqueue_tasks(MEASURED, [(None, None)] * min(BATCH, count - start))


def fill_backlog(count: int) -> int:
    """Make exactly ``count`` filler tasks wait (ACCEPTED, due, low priority); return rows added.

    Tops up what is already waiting with one ``INSERT … SELECT`` of the missing rows; a
    larger backlog than ``count`` is deleted and inserted again. Run ``settle()`` next.
    """
    filler = TaskType.objects.get(identifier=FILLER)
    waiting = TaskInstance.objects.filter(type=filler, status=Status.ACCEPTED).count()
    if waiting > count:
        reset([FILLER])
        waiting = 0
    missing = count - waiting
    if not missing:
        return 0
    vendor = connection.vendor
    statement = _FILL.format(table=_TASKS, uuid=_NEW_UUID[vendor], series=_SERIES[vendor])
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    # Numbered after every filler row so far, so identifiers stay unique per type.
    offset = TaskInstance.objects.filter(type=filler).count()
    queue = TaskType.objects.get(identifier=MEASURED).queue
    params: list[Any] = [
        filler.pk,
        offset,
        int(Status.ACCEPTED),
        FILLER_PRIORITY,
        queue,
        now,
        now,
        now,
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        if vendor == "postgresql":
            # The trigram index of the search is two thirds of the insert's cost row by
            # row; a pending list as large as the batch defers its merge to one bulk step,
            # in the VACUUM of settle(), before anything is measured.
            cursor.execute("SET LOCAL gin_pending_list_limit = '2GB'")
        cursor.execute(statement, [*params, missing])
    return missing


def settle() -> None:
    """Clear dead rows, merge pending index entries, refresh the planner's statistics.

    Of the task and log tables; PostgreSQL: ``VACUUM (ANALYZE)``, SQLite: ``ANALYZE``.
    """
    tables = f"{_TASKS}, {LogRecord._meta.db_table}"
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # Outside a transaction (VACUUM cannot run in one): Django's autocommit.
            cursor.execute("SET maintenance_work_mem = '256MB'")
            cursor.execute(f"VACUUM (ANALYZE) {tables}")
            cursor.execute("RESET maintenance_work_mem")
            _checkpoint(cursor)
        else:
            cursor.execute("ANALYZE")


def _checkpoint(cursor) -> None:
    """Write out the dirty pages now, so no checkpoint falls into the next measurement.

    A million-row fill and its VACUUM leave gigabytes of WAL behind; the checkpoint they
    trigger would otherwise run during the drain that follows and slow it down. Needs a
    superuser (or pg_checkpoint); without the right, the figures are just noisier.
    """
    try:
        with transaction.atomic():
            cursor.execute("CHECKPOINT")
    except DatabaseError as exc:
        logger.warning("No CHECKPOINT before measuring (%s); expect noisier figures", exc)


def commits() -> int | None:
    """Transactions committed in this database so far (PostgreSQL's statistics), else None."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
        return cursor.fetchone()[0]


def _daemon(*args: str) -> subprocess.Popen:
    """Start ``manage.py atpd`` on this database, in a session of its own (for killpg)."""
    return subprocess.Popen(
        [sys.executable, str(Path(django_settings.BASE_DIR) / "manage.py"), "atpd", "-v", "0"]
        + list(args),
        env={**os.environ, "DATABASE_URL": database_url()},
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )


def _stop(daemon: subprocess.Popen) -> None:
    """Warm-stop the daemon (SIGTERM to its process group); kill it if it hangs."""
    if daemon.poll() is not None:
        return
    os.killpg(daemon.pid, signal.SIGTERM)
    try:
        daemon.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait()


def _drain_run(count: int, concurrency: int, pool: str, *extra: str) -> dict:
    """Run one daemon over the ``count`` waiting measured tasks; figures from their rows."""
    before = commits()
    launched = time.time()
    daemon = _daemon("-n", str(concurrency), "--pool", pool, *extra)
    try:
        code = daemon.wait(timeout=120 + count / 5)  # a hung daemon fails the run
    except subprocess.TimeoutExpired:
        _stop(daemon)
        raise RuntimeError(f"atpd {' '.join(extra)} did not finish {count} tasks in time") from None
    exited = time.time()
    if code != 0:
        raise RuntimeError(f"atpd exited with status {code}")
    after = commits()
    measured = TaskInstance.objects.filter(type__identifier=MEASURED)
    finishes = sorted(measured.filter(status=Status.FINISHED).values_list("finished_at", flat=True))
    if len(finishes) != count:
        raise RuntimeError(f"the daemon finished {len(finishes)} of {count} tasks")
    first_claim = min(measured.values_list("started_at", flat=True))
    wall = finishes[-1].timestamp() - launched
    return {
        "tasks": count,
        "wall_s": wall,
        "wall_per_s": count / wall,
        "steady_per_s": steady_rate([moment.timestamp() for moment in finishes]),
        "startup_s": first_claim.timestamp() - launched,
        "exit_s": exited - launched,
        "commits_per_task": None if before is None else (after - before) / count,  # type: ignore[operator]
    }


def measure_async(
    count: int = ASYNC_TASKS, seconds: float = ASYNC_SECONDS, concurrency: int = ASYNC_CONCURRENCY
) -> dict:
    """``count`` async tasks that each sleep ``seconds``, drained by ``atpd --burst --pool
    asyncio -n concurrency``: wall time from the daemon's launch to the last ``finished_at``.

    The floor is ``count / concurrency × seconds`` (1 s for the defaults) plus start-up.
    """
    reset([ASYNC_SLEEP])
    for start in range(0, count, BATCH):
        size = min(BATCH, count - start)
        tracker.enqueue_tasks(ASYNC_SLEEP, [(None, {"seconds": seconds})] * size)
    launched = time.time()
    daemon = _daemon("-n", str(concurrency), "--pool", "asyncio", "--burst")
    try:
        code = daemon.wait(timeout=120 + count * seconds)
    except subprocess.TimeoutExpired:
        _stop(daemon)
        raise RuntimeError(f"atpd --pool asyncio did not finish {count} tasks in time") from None
    try:
        if code != 0:
            raise RuntimeError(f"atpd exited with status {code}")
        tasks = TaskInstance.objects.filter(type__identifier=ASYNC_SLEEP)
        finishes = sorted(
            tasks.filter(status=Status.FINISHED).values_list("finished_at", flat=True)
        )
        if len(finishes) != count:
            raise RuntimeError(f"the daemon finished {len(finishes)} of {count} tasks")
        first_start = min(tasks.values_list("started_at", flat=True))
        return {
            "tasks": count,
            "sleep_s": seconds,
            "concurrency": concurrency,
            "wall_s": finishes[-1].timestamp() - launched,
            "startup_s": first_start.timestamp() - launched,
            "running_s": (finishes[-1] - first_start).total_seconds(),
        }
    finally:
        reset([ASYNC_SLEEP])


def steady_rate(finishes: list[float], warmup: float = WARMUP) -> float | None:
    """Tasks per second after warm-up: (n − k) / (t_n − t_k), t sorted, k = ⌈warmup · n⌉ ≥ 1.

    None when it cannot be told (fewer than 2 finishes, or all at one instant).
    """
    n = len(finishes)
    k = max(1, math.ceil(warmup * n))
    if n - k < 1 or finishes[-1] <= finishes[k - 1]:
        return None
    return (n - k) / (finishes[-1] - finishes[k - 1])


def measure_enqueue(count: int) -> dict:
    """Enqueue rates: ``count`` tasks one by one, and ``10 × count`` in bulk calls."""
    reset([MEASURED])
    begin = time.perf_counter()
    for _ in range(count):
        tracker.enqueue_task(MEASURED)
    single = count / (time.perf_counter() - begin)
    reset([MEASURED])
    begin = time.perf_counter()
    fill(10 * count)
    bulk = 10 * count / (time.perf_counter() - begin)
    reset([MEASURED])
    return {
        "one_by_one_tasks": count,
        "one_by_one_per_s": single,
        "bulk_tasks": 10 * count,
        "bulk_per_s": bulk,
    }


def measure_drain(count: int, concurrency: int, pool: str) -> dict:
    """One ``atpd --burst`` over ``count`` queued no-op tasks; see the module's figures."""
    reset([MEASURED])
    fill(count)
    try:
        return _drain_run(count, concurrency, pool, "--burst")
    finally:
        reset([MEASURED])


def measure_backlog(count: int, backlog: int) -> dict:
    """Drain ``count`` measured tasks in front of ``backlog`` waiting filler tasks (one run).

    The filler is topped up to ``backlog`` (after the first run, normally nothing is
    missing) and left in place for the next run; the caller deletes it (``reset``).
    """
    reset([MEASURED])
    fill_backlog(backlog)
    fill(count)
    settle()
    claimed = TaskInstance.objects.filter(type__identifier=FILLER).exclude(status=Status.ACCEPTED)
    claimed_before = claimed.count()
    pool, concurrency = BACKLOG_DAEMON
    try:
        figures = _drain_run(count, concurrency, pool, "--max-tasks", str(count))
    finally:
        reset([MEASURED])
    return {**figures, "backlog": backlog, "filler_claimed": claimed.count() - claimed_before}


def measure_latency(count: int, gap: float = 0.02) -> dict:
    """Idle daemon: enqueue one task every ``gap`` s; enqueue→handler-start percentiles (ms)."""
    reset([STAMP])
    daemon = _daemon("-n", "2")
    try:
        deadline = time.monotonic() + 30
        while not Worker.objects.running().filter(pid=daemon.pid).exists():
            if time.monotonic() > deadline or daemon.poll() is not None:
                raise RuntimeError("the daemon did not start")
            time.sleep(0.05)
        time.sleep(1.0)  # let it settle into its idle wait
        sent = {}
        for _ in range(count):
            moment = time.time()
            sent[tracker.enqueue_task(STAMP)] = moment
            time.sleep(gap)
        deadline = time.monotonic() + 60
        stamped = TaskInstance.objects.filter(pk__in=sent, status=Status.FINISHED)
        while stamped.count() < count and time.monotonic() < deadline:
            time.sleep(0.05)
        started = {
            task.pk: float(bytes(task.response.data)) for task in stamped.select_related("response")
        }
    finally:
        _stop(daemon)
    reset([STAMP])
    latencies = sorted(1000 * (started[pk] - sent[pk]) for pk in started)
    if len(latencies) != count:
        raise RuntimeError(f"latency run finished {len(latencies)} of {count} tasks")
    return {"tasks": count, **{f"p{q}_ms": _percentile(latencies, q) for q in (50, 95, 99)}}


def _percentile(ordered: list[float], q: float) -> float:
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


def median_of(runs: list[dict]) -> dict:
    """Field-wise median of several runs' figures (None where no run has the figure)."""
    medians = {}
    for key in runs[0]:
        values = [run[key] for run in runs if run[key] is not None]
        medians[key] = statistics.median(values) if values else None
    return medians


def _backlog_section(count: int, backlogs, runs: int) -> dict:
    """Each backlog size's medians, smallest first, with its ratio to the smallest's rate."""
    sizes = sorted(set(backlogs))
    results = {}
    try:
        # Growing sizes: the filler is only topped up, never re-inserted.
        for size in sizes:
            begin = time.perf_counter()
            fill_backlog(size)
            settle()
            fill_seconds = time.perf_counter() - begin  # insert and VACUUM: a settled backlog
            figures = median_of([measure_backlog(count, size) for _ in range(runs)])
            results[str(size)] = {**figures, "fill_s": fill_seconds}
    finally:
        cleanup = remove_filler()
    base = results[str(sizes[0])]["steady_per_s"]
    for figures in results.values():
        rate = figures["steady_per_s"]
        figures["ratio"] = rate / base if rate and base else None
    pool, concurrency = BACKLOG_DAEMON
    return {"daemon": f"{pool} -n {concurrency}", "by_backlog": results, "cleanup_s": cleanup}


def remove_filler(patience: float = 120.0) -> float:
    """Delete the backlog's filler tasks, whatever happened before; return the seconds taken.

    A million claimable tasks left behind would be run by the next daemon on this database,
    so a lost connection (the database restarting) is retried for ``patience`` seconds.
    """
    begin = time.perf_counter()
    deadline = time.monotonic() + patience
    while True:
        try:
            reset([FILLER])
            _rebuild_task_indexes()
            settle()
            return time.perf_counter() - begin
        except CONNECTION_ERRORS:
            if time.monotonic() > deadline:
                raise
            drop_all()  # the next query opens a new connection
            time.sleep(1)


def _rebuild_task_indexes() -> None:
    """Rebuild the task table's indexes after the filler's million rows are gone.

    Deleted rows leave their index pages behind (a GIN index never shrinks: the trigram
    index of the search keeps over a gigabyte), and every later enqueue and claim on this
    database would pay for them: a second benchmark run measured bulk enqueue five times
    slower. A plain REINDEX blocks writers for its duration (a second or so, the rows
    being gone), which the benchmark's own database can afford. PostgreSQL only.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"REINDEX TABLE {_TASKS}")


def run(
    tasks=5000,
    runs=3,
    drain=DRAIN_VARIANTS,
    latency_tasks=200,
    backlog=None,
    backlog_tasks=5000,
    sections=DEFAULT_SECTIONS,
    out=None,
    chord_tasks=CHORD_TASKS,
    pgbench_seconds=5,
    claims=claim.CLAIMS,
    claim_waiting=claim.WAITING,
    claim_batch=claim.BATCH,
    cleanup_tasks=cleanup.CLEANUP_TASKS,
    fleet=None,
    fleet_seconds=None,
) -> dict:
    """Run the chosen ``sections`` ``runs`` times each; return (and write to ``out``) the medians.

    ``drain`` lists ``(pool, concurrency)`` variants; ``backlog`` the backlog sizes
    (default ``BACKLOGS``); ``claims``, ``claim_waiting`` and ``claim_batch`` shape the
    claim section; ``fleet`` the fleet sizes and ``fleet_seconds`` their window
    (``atp.bench.fleet``). See the module docstring for every figure.
    """
    begin = time.perf_counter()
    setup()
    settle()  # statistics that count the history (not here in setup: see fill_history)
    try:
        report = _run_sections(
            tasks,
            runs,
            drain,
            latency_tasks,
            backlog,
            backlog_tasks,
            sections,
            chord_tasks,
            pgbench_seconds,
            (claims, claim_waiting, claim_batch),
            cleanup_tasks,
            (fleet, fleet_seconds),
        )
    finally:
        reset([HISTORY])
    report["seconds"] = time.perf_counter() - begin
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2))
    return report


def _run_sections(
    tasks,
    runs,
    drain,
    latency_tasks,
    backlog,
    backlog_tasks,
    sections,
    chord_tasks=CHORD_TASKS,
    pgbench_seconds=5,
    claim_shape=(claim.CLAIMS, claim.WAITING, claim.BATCH),
    cleanup_tasks=cleanup.CLEANUP_TASKS,
    fleet_shape=(None, None),
) -> dict:
    report: dict = {"database": connection.vendor, "runs": runs, "sections": list(sections)}
    if "enqueue" in sections:
        report["enqueue"] = median_of([measure_enqueue(max(1, tasks // 5)) for _ in range(runs)])
    if "drain" in sections:
        report["drain"] = {
            f"{pool} -n {n}": median_of([measure_drain(tasks, n, pool) for _ in range(runs)])
            for pool, n in drain
        }
    if "latency" in sections:
        report["latency"] = median_of([measure_latency(latency_tasks) for _ in range(runs)])
    if "workflow" in sections:
        report["workflow"] = median_of(
            [workflow.measure_chord(chord_tasks, MEASURED, reset, _drain_run) for _ in range(runs)]
        )
    if "pgbench" in sections:
        from atp.bench import pgbench

        report["pgbench"] = (
            median_of([pgbench.measure(pgbench_seconds) for _ in range(runs)])
            if connection.vendor == "postgresql"
            else {"skipped": "PostgreSQL only"}
        )
    if "async" in sections:
        report["async"] = median_of([measure_async() for _ in range(runs)])
    if "claim" in sections:
        claims, waiting, batch = claim_shape
        report["claim"] = (
            median_of(
                [
                    claim.measure(claims, waiting, batch, lambda: reset([MEASURED]), fill, settle)
                    for _ in range(runs)
                ]
            )
            if connection.vendor == "postgresql"
            else {"skipped": "PostgreSQL only (the one-statement claim)"}
        )
    if "cleanup" in sections:
        report["cleanup"] = (
            median_of(
                [
                    cleanup.measure_cleanup(cleanup_tasks, _daemon, _stop, reset, MEASURED)
                    for _ in range(runs)
                ]
            )
            if connection.vendor == "postgresql"
            else {"skipped": "PostgreSQL only"}
        )
    if "fleet" in sections:
        if connection.vendor != "postgresql":
            report["fleet"] = {"skipped": "PostgreSQL only"}
        else:
            sizes, seconds = fleet_shape
            report["fleet"] = {
                str(size): median_of(
                    [
                        fleet.measure(
                            size,
                            seconds or fleet.FLEET_SECONDS,
                            _daemon,
                            _stop,
                            MEASURED,
                            STAMP,
                            reset,
                        )
                        for _ in range(runs)
                    ]
                )
                for size in sizes or fleet.FLEET
            }
    if "backlog" in sections:
        if connection.vendor in _SERIES:
            report["backlog"] = _backlog_section(backlog_tasks, backlog or BACKLOGS, runs)
        else:
            report["backlog"] = {"skipped": f"no filler insert for {connection.vendor}"}
    return report


#: What each figure of the table means (printed under it by ``manage.py atp_bench``).
LEGEND = """\
wall rate    tasks / (launch of atpd -> last finished_at): the issue's figure, start-up included
steady rate  (tasks - k) / (k-th -> last finished_at), k = first 5 % of finishes: warm daemon
wall time    launch of atpd -> last finished_at; start-up: launch -> first task claimed
commits      pg_stat_database.xact_commit during the run / tasks (n/a on SQLite)
backlog      measured tasks drained while that many lower-priority tasks wait in the queue;
             ratio: steady rate / steady rate with the smallest backlog (target within 10 %)
async        1,000 tasks that each await asyncio.sleep(0.1) on atpd --pool asyncio -n 100:
             wall time launch -> last finished_at (target < 5 s; the floor is 1 s + start-up)
claim        the claim statement alone, rolled back, interleaved with the one before flow
             control (baseline): median ms per claim, client (round trip) and server
             (planning + execution); ratio = current / baseline (issue 19: within 1.05)
cleanup      atp_cleanup's retention sweep over that many retired tasks (3 log records each)
             while atpd -n 2 serves a task every 20 ms; claim: enqueue -> claimed of those
             tasks, before and during the sweep (contains the claim: an upper bound of it)
fleet        N idle daemons; per daemon: commits/s and queries/s (pg_stat_database,
             pg_stat_statements), server time (active_time, ms/s), client connections idle
             and after their handlers wrote (pg_stat_activity); commits per enqueue"""


def table(report: dict) -> list[tuple[str, str, str, str, str]]:
    """The report as rows of (section, variant, figure, value, unit), for printing."""
    rows = []

    def add(section, variant, figure, value, unit, digits=0):
        text = "n/a" if value is None else f"{value:,.{digits}f}"
        rows.append((section, variant, figure, text, unit))

    def drain_rows(section, variant, figures):
        add(section, variant, "wall rate", figures["wall_per_s"], "tasks/s")
        add(section, variant, "steady rate", figures["steady_per_s"], "tasks/s")
        add(section, variant, "wall time", figures["wall_s"], "s", 2)
        add(section, variant, "start-up", figures["startup_s"], "s", 2)
        add(section, variant, "commits", figures["commits_per_task"], "per task", 2)

    if "enqueue" in report:
        enqueue = report["enqueue"]
        add(
            "enqueue",
            f"one by one, {enqueue['one_by_one_tasks']:,} tasks",
            "rate",
            enqueue["one_by_one_per_s"],
            "tasks/s",
        )
        add(
            "enqueue",
            f"bulk, {BATCH:,} per call, {enqueue['bulk_tasks']:,} tasks",
            "rate",
            enqueue["bulk_per_s"],
            "tasks/s",
        )
    for name, figures in report.get("drain", {}).items():
        drain_rows("drain", f"{name}, {figures['tasks']:,} tasks", figures)
    if "latency" in report:
        latency = report["latency"]
        variant = f"idle -n 2, {latency['tasks']:,} tasks 20 ms apart"
        for q in (50, 95, 99):
            add("latency", variant, f"p{q} enqueue->start", latency[f"p{q}_ms"], "ms", 1)
    if "workflow" in report:
        chord = report["workflow"]
        variant = f"chord of {chord['tasks']:,} no-op tasks + callback, processes -n 4"
        add("workflow", variant, "enqueue", chord["enqueue_s"], "s", 2)
        add("workflow", variant, "end to end", chord["end_to_end_s"], "s", 2)
        add("workflow", variant, "steady rate", chord["drain_per_s"], "tasks/s")
    raw = report.get("pgbench", {})
    if "skipped" in raw:
        rows.append(("pgbench", "skipped", raw["skipped"], "", ""))
    for clients in (1, 4):
        if f"c{clients}_tps" in raw:
            variant = f"raw commits: 1-row UPDATE per transaction, {clients} client(s)"
            add("pgbench", variant, "rate", raw[f"c{clients}_tps"], "commits/s")
    if "async" in report:
        figures = report["async"]
        variant = (
            f"asyncio -n {figures['concurrency']}, {figures['tasks']:,} tasks "
            f"sleeping {figures['sleep_s']:g} s"
        )
        add("async", variant, "wall time", figures["wall_s"], "s", 2)
        add("async", variant, "start-up", figures["startup_s"], "s", 2)
        add("async", variant, "first start->last end", figures["running_s"], "s", 2)
    claimed = report.get("claim", {})
    if "skipped" in claimed:
        rows.append(("claim", "skipped", claimed["skipped"], "", ""))
    elif claimed:
        variant = (
            f"{claimed['batch']:g} of {claimed['waiting']:,.0f} waiting, "
            f"{claimed['claims']:,.0f} claims each"
        )
        for kind in ("client", "server"):
            for name in ("current", "baseline"):
                add("claim", variant, f"{kind}, {name}", claimed[f"{name}_{kind}_ms"], "ms", 3)
            add("claim", variant, f"{kind} ratio", claimed[f"{kind}_ratio"], "x", 3)
    backlog = report.get("backlog", {})
    if "skipped" in backlog:
        rows.append(("backlog", "skipped", backlog["skipped"], "", ""))
    for size, figures in backlog.get("by_backlog", {}).items():
        variant = f"{int(size):,} waiting, {figures['tasks']:,} tasks, {backlog['daemon']}"
        drain_rows("backlog", variant, figures)
        add("backlog", variant, "ratio", figures["ratio"], "x", 2)
        add("backlog", variant, "filler claimed", figures["filler_claimed"], "tasks")
    swept = report.get("cleanup", {})
    if "skipped" in swept:
        rows.append(("cleanup", "skipped", swept["skipped"], "", ""))
    elif swept:
        variant = f"{int(swept['tasks']):,} retired, batches of {int(swept['batch']):,}"
        add("cleanup", variant, "deleted", swept["deleted_per_s"], "tasks/s")
        add("cleanup", variant, "sweep time", swept["seconds"], "s", 1)
        for phase in ("before", "during"):
            for q in (50, 99):
                value = swept[f"claim_p{q}_{phase}_ms"]
                add("cleanup", variant, f"claim p{q} {phase}", value, "ms", 1)
    for figures in report.get("fleet", {}).values():
        if isinstance(figures, str):  # {"skipped": why}
            rows.append(("fleet", "skipped", figures, "", ""))
            continue
        for variant, figure, value, unit, digits in fleet.table_rows(figures):
            add("fleet", variant, figure, value, unit, digits)
    return rows
