"""The benchmark's claim line: the claim statement now against the claim before flow control.

Issue 19 asks that the claim, with flow control's rules present but unused, cost within 5 %
of the claim before them. This times the statement alone, on PostgreSQL (the one-statement
claim is PostgreSQL's; other databases skip the section): ``waiting`` due no-op tasks of
one plain type (no rate or concurrency limit, nothing paused), then ``claims`` rounds, each
claiming ``batch`` tasks with both statements, the current one (``atp.sql.claim``, as the
daemon builds it) and ``BASELINE_CLAIM``, in alternating order. Each claim runs in a
transaction that is rolled back, so every claim meets the same waiting tasks.

``client_ms``: execute and fetch, on this process's clock (the round trip included).
``server_ms``: planning + execution as PostgreSQL reports them, from ``EXPLAIN (ANALYZE,
TIMING OFF)`` of the same statement, also rolled back. Each is the median over the claims
of a run; the report gives the median over ``runs`` runs, and ``*_ratio`` = current /
baseline (1.05 would be 5 % slower than before).
"""

import json
import statistics
import time
from collections.abc import Callable

from django.db import connection, transaction
from django.utils import timezone

from atp.models import CLAIM_ORDER, Status
from atp.sql.claim import claim_statement

#: The claim statement as it was before flow control (``atp/tracker/batch_sql.py`` at
#: 2b0cb5b^, the parent of the commit that added unique tasks, concurrency limits and pauses),
#: without the optional queue filter. The benchmark's baseline only: nothing else runs it.
BASELINE_CLAIM = """
WITH picked AS (
    SELECT id FROM atp_taskinstance
    WHERE status = %(accepted)s AND run_after <= %(now)s
    ORDER BY priority DESC, run_after, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
claimed AS (
    UPDATE atp_taskinstance AS t
    SET status = %(running)s, server_id = %(server_id)s, received_at = %(now)s,
        started_at = %(now)s, updated_at = %(now)s, attempts = t.attempts + 1
    FROM picked, atp_tasktype AS tt
    WHERE t.id = picked.id AND tt.id = t.type_id AND tt.rate_limit = ''
        AND (t.expires IS NULL OR t.expires > %(now)s)
    RETURNING t.id, t.uuid, t.identifier, t.input, t.attempts, t.retries, t.priority,
        t.run_after, t.expires, t.queue, t.parent_id,
        tt.identifier AS type_name, tt.handler, tt.soft_time_limit, tt.hard_time_limit,
        tt.timeout
)
SELECT claimed.*, (SELECT count(*) FROM picked) FROM (SELECT 1) AS one
LEFT JOIN claimed ON true
"""

#: Defaults: waiting tasks, tasks per claim (a daemon's batch), claims per variant and run.
WAITING, BATCH, CLAIMS = 5000, 32, 1000


def statements() -> dict[str, str]:
    """The two statements compared: the daemon's claim now (no queue filter, nothing paused,
    no type held back) and the baseline."""
    current, _ = claim_statement(CLAIM_ORDER)
    return {"current": current, "baseline": BASELINE_CLAIM}


def measure(
    claims: int, waiting: int, batch: int, reset: Callable, fill: Callable, settle: Callable
) -> dict:
    """One run: ``claims`` rounds over ``waiting`` tasks, ``batch`` per claim; the medians.

    ``reset``, ``fill`` and ``settle`` are the benchmark's own (``atp.bench.throughput``
    passes them: delete the measured tasks, enqueue that many, vacuum and analyse).
    """
    reset()
    fill(waiting)
    settle()
    try:
        variants = statements()
        params = {
            "accepted": int(Status.ACCEPTED),
            "running": int(Status.RUNNING),
            "server_id": "bench-claim",
            "now": timezone.now(),
            "limit": batch,
        }
        client: dict[str, list[float]] = {name: [] for name in variants}
        server: dict[str, list[float]] = {name: [] for name in variants}
        order = list(variants)
        with connection.cursor() as cursor:
            for round_number in range(claims):
                # Alternate which goes first, so neither always meets the warmer cache.
                for name in order if round_number % 2 == 0 else order[::-1]:
                    client[name].append(_client_ms(cursor, variants[name], params, batch))
                    server[name].append(_server_ms(cursor, variants[name], params))
    finally:
        reset()
    figures: dict = {"claims": claims, "waiting": waiting, "batch": batch}
    for name in variants:
        figures[f"{name}_client_ms"] = statistics.median(client[name])
        figures[f"{name}_server_ms"] = statistics.median(server[name])
    for kind in ("client", "server"):
        figures[f"{kind}_ratio"] = figures[f"current_{kind}_ms"] / figures[f"baseline_{kind}_ms"]
    return figures


def _client_ms(cursor, statement: str, params: dict, batch: int) -> float:
    """Milliseconds to run and fetch one claim, rolled back; it must claim ``batch`` tasks."""
    with transaction.atomic():
        begin = time.perf_counter()
        cursor.execute(statement, params)
        rows = cursor.fetchall()
        elapsed = time.perf_counter() - begin
        transaction.set_rollback(True)
    claimed = sum(row[0] is not None for row in rows)
    if claimed != batch:
        raise RuntimeError(f"a claim took {claimed} of {batch} tasks: the section is not valid")
    return 1000 * elapsed


def _server_ms(cursor, statement: str, params: dict) -> float:
    """Planning + execution time (ms) PostgreSQL reports for one claim, rolled back."""
    with transaction.atomic():
        cursor.execute(f"EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) {statement}", params)
        (plan,) = cursor.fetchone()
        transaction.set_rollback(True)
    plan = (json.loads(plan) if isinstance(plan, str) else plan)[0]
    return plan["Planning Time"] + plan["Execution Time"]
