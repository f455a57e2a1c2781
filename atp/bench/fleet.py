"""The fleet section of ``atp_bench``: what each running daemon costs the database.

For each fleet size N (``--fleet``, default 1, 4 and 8), N daemons (``atpd -n 2``, process
pool, the settings' poll and heartbeat intervals) are started on the configured database
and left idle: nothing waits in the queue. After all have registered and ``WARMUP``
seconds have passed (start-up reads and writes: task types, schedules, first sweeps), the
database's own counters are read twice, ``seconds`` (``--fleet-seconds``, 30) apart:

commits/s
    ``pg_stat_database.xact_commit`` (each statement outside a transaction commits too).
queries/s
    ``pg_stat_statements.calls`` of this database, when that extension is loaded
    (``shared_preload_libraries``) and can be created here; else n/a. A daemon statement
    that opens a transaction carries the daemon's limits in the same string
    (``atp.daemon.db``): PostgreSQL counts two statements for one round trip.
server ms/s
    ``pg_stat_database.active_time`` (PostgreSQL 14 or later): milliseconds per second the
    server spent running statements for this database, the CPU share the fleet takes.
connections
    client backends of this database (``pg_stat_activity``) while the fleet idles, minus
    those before it started, per daemon; of them, those whose last statement was a LISTEN.
    Then the fleet runs ``WRITES`` tasks per daemon whose handler stores a response, and
    the count is taken again: a handler process opens a connection of its own the first
    time a handler touches the database (at most one per slot).
commits per enqueue
    Between the two, ``WAKEUPS`` no-op tasks enqueued one at a time ``WAKEUP_GAP`` apart
    into the idle fleet: the commits of the database meanwhile, less the fleet's idle rate,
    per task. An enqueue's NOTIFY wakes every listening daemon, and each one claims (all
    but one find nothing): this grows with the fleet. The statistics' blur (below) makes
    it uncertain by about the fleet's idle commits in one second, spread over the tasks.

Every figure is per second and per daemon; the bench's own two readings are counted in
(a handful of statements per window). PostgreSQL statistics reach the shared counters
from a backend about once a second, so a window's edges blur by about that much.
PostgreSQL only: SQLite has none of these counters.
"""

import subprocess
import time
from collections.abc import Callable

from django.db import DatabaseError, connection, transaction

from atp import tracker
from atp.models import Status, TaskInstance, Worker

#: Fleet sizes measured by default, and the seconds each one's counters are read apart.
FLEET, FLEET_SECONDS = (1, 4, 8), 30.0
#: The daemons' pool and concurrency.
POOL, CONCURRENCY = "processes", 2
#: Seconds after the last daemon registered before the window opens.
WARMUP = 5.0
#: Tasks per daemon whose handler writes, after the window: enough for every daemon's
#: prefetch (up to 32 per slot), so that each daemon's handler processes get some.
WRITES = 100
#: No-op tasks enqueued one at a time into the idle fleet, and the seconds between two.
WAKEUPS, WAKEUP_GAP = 100, 0.1


def measure(
    count: int,
    seconds: float,
    start: Callable[..., subprocess.Popen],
    stop: Callable[[subprocess.Popen], None],
    noop: str,
    writer: str,
    reset: Callable,
) -> dict:
    """Start ``count`` idle daemons, read the database's counters ``seconds`` apart.

    ``start(*options)`` and ``stop(daemon)`` start and warm-stop an ``atpd``; ``noop`` and
    ``writer`` are task types whose handlers do nothing and write, ``reset([type])``
    deletes their tasks (the benchmark's own, passed by ``atp.bench.throughput`` so that
    this module need not import it).
    """
    statements = _statement_counter()
    before_fleet = _backends()
    daemons = [start("-n", str(CONCURRENCY), "--pool", POOL) for _ in range(count)]
    try:
        _wait_registered(daemons)
        time.sleep(WARMUP)
        first, began = _counters(statements), time.monotonic()
        time.sleep(seconds)
        last, elapsed = _counters(statements), time.monotonic() - began
        idle = _backends()
        reset([noop, writer])
        woken, woken_s = _wake_ups(noop, statements)
        _run(writer, count * WRITES)
        working = _backends()
    finally:
        for daemon in daemons:
            stop(daemon)
        reset([noop, writer])

    def rate(key):
        if first[key] is None or last[key] is None:
            return None
        return (last[key] - first[key]) / elapsed / count

    return {
        "daemons": count,
        "seconds": elapsed,
        "commits_per_s": rate("commits"),
        "rollbacks_per_s": rate("rollbacks"),
        "queries_per_s": rate("queries"),
        "server_ms_per_s": rate("active_ms"),
        "connections": (idle[0] - before_fleet[0]) / count,
        "listen_connections": (idle[1] - before_fleet[1]) / count,
        "connections_after_work": (working[0] - before_fleet[0]) / count,
        # The commits one enqueue causes in the whole fleet, its idle rate taken out.
        "commits_per_enqueue": (woken - rate("commits") * count * woken_s) / WAKEUPS,
    }


def _wait_registered(daemons, timeout: float = 120.0) -> None:
    """Wait until every daemon has its live Worker row (so it has started)."""
    pids = {daemon.pid for daemon in daemons}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for daemon in daemons:
            if daemon.poll() is not None:
                raise RuntimeError(f"atpd exited with status {daemon.returncode} at start")
        live = Worker.objects.filter(pid__in=pids, stopped_at__isnull=True).count()
        if live == len(daemons):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{len(daemons)} daemons did not all start within {timeout:g} s")


def _wake_ups(noop: str, statements: str | None) -> tuple[int, float]:
    """Enqueue ``WAKEUPS`` no-op tasks one at a time into the idle fleet, wait until they ran.

    Returns the commits of the database meanwhile and the seconds it took: each enqueue's
    NOTIFY wakes every listening daemon, and each of them claims.
    """
    first, began = _counters(statements), time.monotonic()
    for _ in range(WAKEUPS):
        tracker.enqueue_task(noop)
        time.sleep(WAKEUP_GAP)
    _run(noop, WAKEUPS, enqueue=False)
    return _counters(statements)["commits"] - first["commits"], time.monotonic() - began


def _run(task_type: str, total: int, enqueue: bool = True, timeout: float = 120.0) -> None:
    """Enqueue ``total`` tasks of ``task_type`` (unless done already); wait until they ran."""
    if enqueue:
        tracker.enqueue_tasks(task_type, [(None, None)] * total)
    finished = TaskInstance.objects.filter(type__identifier=task_type, status=Status.FINISHED)
    deadline = time.monotonic() + timeout
    while finished.count() < total:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the fleet did not run {total} tasks within {timeout:g} s")
        time.sleep(0.2)


def _statement_counter() -> str | None:
    """The query that sums this database's ``pg_stat_statements`` calls, if it can be read."""
    query = (
        "SELECT sum(calls)::bigint FROM pg_stat_statements"
        " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('shared_preload_libraries')")
            if "pg_stat_statements" not in cursor.fetchone()[0]:
                return None
            cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            cursor.execute(query)
    except DatabaseError:
        return None  # not allowed to create it, or an old version: counted as n/a
    return query


def _counters(statements: str | None) -> dict:
    """This database's commit, rollback, statement and busy-time counters now."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # fresh figures, not cached ones
        cursor.execute("SELECT current_setting('server_version_num')::int >= 140000")
        active = "active_time" if cursor.fetchone()[0] else "NULL"  # PostgreSQL 14 has it
        cursor.execute(
            f"SELECT xact_commit, xact_rollback, {active} FROM pg_stat_database"  # noqa: S608
            " WHERE datname = current_database()"
        )
        commits, rollbacks, active_ms = cursor.fetchone()
        queries = None
        if statements is not None:
            cursor.execute(statements)
            queries = cursor.fetchone()[0]
    return {"commits": commits, "rollbacks": rollbacks, "queries": queries, "active_ms": active_ms}


def _backends() -> tuple[int, int]:
    """Client connections to this database but this one: all, and those that LISTEN."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), count(*) FILTER (WHERE query LIKE 'LISTEN %')"
            " FROM pg_stat_activity WHERE datname = current_database()"
            " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()


def table_rows(figures: dict) -> list[tuple[str, str, float | None, str, int]]:
    """The fleet report's rows: ``(variant, figure, value, unit, digits)``."""
    variant = f"{figures['daemons']:g} idle atpd -n {CONCURRENCY}, {figures['seconds']:.0f} s"
    return [
        (variant, "commits", figures["commits_per_s"], "/s per daemon", 2),
        (variant, "queries", figures["queries_per_s"], "/s per daemon", 2),
        (variant, "server time", figures["server_ms_per_s"], "ms/s per daemon", 3),
        (variant, "connections", figures["connections"], "per daemon", 1),
        (variant, "of which LISTEN", figures["listen_connections"], "per daemon", 1),
        (variant, "after handlers wrote", figures["connections_after_work"], "per daemon", 1),
        (variant, "commits per enqueue", figures["commits_per_enqueue"], "in the fleet", 1),
    ]
