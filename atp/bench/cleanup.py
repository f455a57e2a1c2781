"""The benchmark's cleanup section: ``atp_cleanup``'s retention sweep over a large history
while a daemon serves a trickle of new tasks (PostgreSQL only).

``count`` ended tasks (FINISHED a day ago) are inserted with three log records each
(``task-sent``, ``task-received``, ``task-succeeded``), the tables are vacuumed and analysed,
an ``atpd -n 2`` is started (polling an hour apart: no idle sweep of its own), a thread
enqueues one task every ``gap`` seconds, the tasks' type is given a retention of one second
and ``tracker.delete_retired_tasks`` (what ``atp_cleanup`` runs) deletes them. The daemon
also sweeps, every ``CLEANUP_EVERY`` claims, sharing the rows through SKIP LOCKED, so
*deleted/s* is ``count`` over the time until none is left, whoever deleted it. *claim
p50/p99* is enqueue → claimed (``started_at``, written by the claim statement) of the
trickle's tasks sent during the sweep, beside the same figure before it: it contains the
claim and what comes before it (the enqueue's commit, the wake-up), an upper bound of the
claim's own time.
"""

import threading
import time
from datetime import timedelta
from typing import Any

from django.db import connection, connections, transaction
from django.utils import timezone

from atp import tracker
from atp.conf import settings
from atp.models import Status, TaskInstance, TaskType

RETIRED = "bench.retired"
CLEANUP_TASKS = 1_000_000
TRICKLE_GAP = 0.02
YEAR = 365 * 24 * 3600

_FILL_TASKS = """
INSERT INTO atp_taskinstance (type_id, identifier, uuid, status, priority, queue, run_after,
    server_id, attempts, retries, enqueued_at, received_at, started_at, finished_at, updated_at)
SELECT %(type_id)s, 'retired-' || n, gen_random_uuid(), %(finished)s, 0, 'default',
    %(moment)s, 'bench', 1, 0, %(moment)s, %(moment)s, %(moment)s, %(moment)s, %(moment)s
FROM generate_series(1, %(count)s) AS n
"""
_FILL_LOGS = """
INSERT INTO atp_logrecord (instance_id, time, status, message, event, fields)
SELECT t.id, %(moment)s, e.status, '', e.event,
    jsonb_build_object('uuid', t.uuid::text, 'identifier', t.identifier, 'result', 'None')
FROM atp_taskinstance AS t
CROSS JOIN (VALUES (1, 'task-sent'), (2, 'task-received'), (5, 'task-succeeded'))
    AS e(status, event)
WHERE t.type_id = %(type_id)s
"""


def measure_cleanup(count: int, daemon, stop, reset, trickle_type: str, gap=TRICKLE_GAP) -> dict:
    """Delete ``count`` retired tasks under load; see the module's figures.

    ``daemon(*args)`` starts and ``stop(process)`` stops an ``atpd``; ``reset(types)``
    deletes the tasks of ``types``; ``trickle_type`` is a no-op type without queue limit.
    """
    if connection.vendor != "postgresql":
        return {"skipped": "PostgreSQL only"}
    # Kept for a year while the daemon starts (it sweeps once at start), retired just before
    # the measured sweep.
    retired = tracker.register_task_type(RETIRED, "atp.bench.throughput.noop", timeret=YEAR)
    reset([RETIRED, trickle_type])
    _fill(retired, count)
    # Polls (and so its idle sweeps) an hour apart: the sweep measured is atp_cleanup's
    # alone; new tasks still wake the daemon at once (NOTIFY).
    process = daemon("-n", "2", "--poll-interval", "3600")
    trickle = _Trickle(trickle_type, gap)
    try:
        trickle.start()
        time.sleep(2.0)  # the daemon's start-up, then a baseline of the idle claim
        trickle.mark("before")
        time.sleep(2.0)
        tracker.register_task_type(RETIRED, "atp.bench.throughput.noop", timeret=1)
        trickle.mark("during")
        begin = time.perf_counter()
        deleted = len(tracker.delete_retired_tasks())
        # The daemon sweeps too (every CLEANUP_EVERY claims), sharing the rows through SKIP
        # LOCKED: the sweep's time is until no retired task is left, whoever deleted it.
        left = TaskInstance.objects.filter(type=retired)
        deadline = time.monotonic() + 600
        while left.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{left.count()} retired tasks were never deleted")
            time.sleep(0.02)
        seconds = time.perf_counter() - begin
        trickle.mark("after")
        time.sleep(0.5)
    finally:
        trickle.stop()
        stop(process)
    claimed = trickle.claim_times()
    reset([RETIRED, trickle_type])
    before, during = claimed.get("before", []), claimed.get("during", [])
    return {
        "tasks": count,
        "batch": settings.CLEANUP_BATCH_SIZE,
        "seconds": seconds,
        "deleted_per_s": count / seconds,
        "deleted_by_atp_cleanup": deleted,
        "claims_during": len(during),
        "claim_p50_before_ms": _percentile(before, 50),
        "claim_p99_before_ms": _percentile(before, 99),
        "claim_p50_during_ms": _percentile(during, 50),
        "claim_p99_during_ms": _percentile(during, 99),
    }


def _fill(retired: TaskType, count: int) -> None:
    moment = timezone.now() - timedelta(days=1)
    params: dict[str, Any] = {
        "type_id": retired.pk,
        "finished": int(Status.FINISHED),
        "moment": moment,
        "count": count,
    }
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_FILL_TASKS, params)
        cursor.execute(_FILL_LOGS, params)
    with connection.cursor() as cursor:  # outside a transaction, as VACUUM must be
        cursor.execute("VACUUM (ANALYZE) atp_taskinstance, atp_logrecord")
        cursor.execute("CHECKPOINT")


class _Trickle(threading.Thread):
    """Enqueues one task every ``gap`` seconds; remembers when each was sent, by phase."""

    def __init__(self, type_identifier: str, gap: float):
        super().__init__(daemon=True)
        self.type_identifier, self.gap = type_identifier, gap
        self.phase: str | None = None
        self.sent: dict[int, tuple[str, float]] = {}
        self.done = threading.Event()

    def mark(self, phase: str) -> None:
        """Tasks sent from now on belong to ``phase``."""
        self.phase = phase

    def run(self) -> None:
        """Enqueue until stopped (a thread of its own: its own connection)."""
        try:
            while not self.done.is_set():
                phase, sent = self.phase, time.time()
                task_id = tracker.enqueue_task(self.type_identifier)
                if phase is not None:
                    self.sent[task_id] = (phase, sent)
                time.sleep(self.gap)
        finally:
            connections.close_all()

    def stop(self) -> None:
        """Stop enqueueing and wait for the thread."""
        self.done.set()
        self.join(timeout=10)

    def claim_times(self) -> dict[str, list[float]]:
        """Enqueue → claimed (ms) of the tasks the daemon claimed, sorted, per phase."""
        started = dict(
            TaskInstance.objects.filter(
                pk__in=list(self.sent), started_at__isnull=False
            ).values_list("pk", "started_at")
        )
        by_phase: dict[str, list[float]] = {}
        for task_id, (phase, sent) in self.sent.items():
            if task_id in started:
                by_phase.setdefault(phase, []).append(1000 * (started[task_id].timestamp() - sent))
        return {phase: sorted(times) for phase, times in by_phase.items()}


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]
