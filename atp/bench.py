"""ATP's benchmark: enqueue rates, drain throughput of a real atpd, idle enqueue→start latency.

Every figure comes from real work on the configured database: daemons are started as
subprocesses (``manage.py atpd``), results are counted in the database afterwards, and
each measurement is repeated so the report can give medians.
"""

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings as django_settings
from django.db import connection

from atp import tracker
from atp.db import database_url
from atp.models import Status, TaskInstance, Worker

BENCH_TYPES = {"bench.noop": "atp.bench.noop", "bench.stamp": "atp.bench.stamp"}
BATCH = 5000


def noop(task_status, input):
    """The benchmark's no-op handler."""


def stamp(task_status, input):
    """Store the time the handler started (epoch seconds) as the response."""
    task_status.store_response(repr(time.time()), "text/plain")


def setup() -> None:
    """Register the benchmark's task types (no queue limit) and delete their old tasks."""
    for identifier, handler in BENCH_TYPES.items():
        tracker.register_task_type(identifier, handler, max_queue_size=100_000_000)
    reset()


def reset() -> None:
    """Delete every task of the benchmark's types."""
    TaskInstance.objects.filter(type__identifier__in=BENCH_TYPES).delete()


def fill(count: int) -> None:
    """Enqueue ``count`` no-op tasks with the bulk API."""
    for start in range(0, count, BATCH):
        tracker.enqueue_tasks("bench.noop", [(None, None)] * min(BATCH, count - start))


def commits() -> int | None:
    """Transactions committed in this database so far (PostgreSQL's statistics), else None."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
        return cursor.fetchone()[0]


def _manage() -> list[str]:
    return [sys.executable, str(Path(django_settings.BASE_DIR) / "manage.py")]


def _database_env() -> dict:
    return {**os.environ, "DATABASE_URL": database_url()}


def measure_enqueue(count: int) -> dict:
    """Enqueue rates: ``count`` tasks one by one, and 10 × ``count`` in bulk batches."""
    reset()
    begin = time.perf_counter()
    for _ in range(count):
        tracker.enqueue_task("bench.noop")
    single = count / (time.perf_counter() - begin)
    reset()
    begin = time.perf_counter()
    fill(10 * count)
    bulk = 10 * count / (time.perf_counter() - begin)
    reset()
    return {"one_by_one_per_s": single, "bulk_per_s": bulk}


def measure_drain(count: int, concurrency: int, pool: str) -> dict:
    """Wall time for one ``atpd --burst`` to run ``count`` queued no-op tasks."""
    reset()
    fill(count)
    before = commits()
    begin = time.perf_counter()
    subprocess.run(
        [*_manage(), "atpd", "--burst", "-n", str(concurrency), "--pool", pool, "-v", "0"],
        env=_database_env(),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - begin
    finished = TaskInstance.objects.filter(type__identifier="bench.noop", status=Status.FINISHED)
    done = finished.count()
    if done != count:
        raise RuntimeError(f"drain finished {done} of {count} tasks")
    after = commits()
    reset()
    return {
        "tasks": count,
        "seconds": seconds,
        "per_s": count / seconds,
        "commits_per_task": None if before is None else (after - before) / count,
    }


def measure_latency(count: int, gap: float = 0.02) -> dict:
    """Idle daemon: enqueue one task every ``gap`` s; enqueue→handler-start percentiles (ms)."""
    reset()
    daemon = subprocess.Popen(
        [*_manage(), "atpd", "-n", "2", "-v", "0"],
        env=_database_env(),
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not Worker.objects.running().filter(pid=daemon.pid).exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the daemon did not start")
            time.sleep(0.05)
        time.sleep(1.0)  # let it settle into its idle wait
        sent = {}
        for _ in range(count):
            moment = time.time()
            sent[tracker.enqueue_task("bench.stamp")] = moment
            time.sleep(gap)
        deadline = time.monotonic() + 60
        stamped = TaskInstance.objects.filter(pk__in=sent, status=Status.FINISHED)
        while stamped.count() < count and time.monotonic() < deadline:
            time.sleep(0.05)
        started = {
            task.pk: float(bytes(task.response.data)) for task in stamped.select_related("response")
        }
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(timeout=30)
    reset()
    latencies = sorted(1000 * (started[pk] - sent[pk]) for pk in started)
    if len(latencies) != count:
        raise RuntimeError(f"latency run finished {len(latencies)} of {count} tasks")
    return {f"p{q}_ms": _percentile(latencies, q) for q in (50, 95, 99)}


def _percentile(ordered: list[float], q: float) -> float:
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


def median_of(runs: list[dict]) -> dict:
    """Field-wise median of several runs' figures."""
    return {
        key: statistics.median(run[key] for run in runs) if runs[0][key] is not None else None
        for key in runs[0]
    }


def run(tasks=2000, runs=3, concurrency=(1, 2, 4), pool="processes", latency_tasks=200, out=None):
    """Run every section ``runs`` times; return (and write to ``out``) the medians."""
    setup()
    report = {
        "database": connection.vendor,
        "runs": runs,
        "enqueue": median_of([measure_enqueue(max(1, tasks // 2)) for _ in range(runs)]),
        "drain": {
            f"{pool} -n {n}": median_of([measure_drain(tasks, n, pool) for _ in range(runs)])
            for n in concurrency
        },
        "latency": median_of([measure_latency(latency_tasks) for _ in range(runs)]),
    }
    if out:
        Path(out).write_text(json.dumps(report, indent=2))
    return report
