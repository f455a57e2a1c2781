"""The batch claim on PostgreSQL: one statement claims and starts due tasks in claim order.

``atp.tracker.batch_sql`` runs it and turns its rows into attempts; the ORM claim beside it
(``atp.tracker.claiming``) judges the tasks this statement leaves alone.
"""

#: Claim and start due tasks, in claim order, skipping rows other daemons hold. The
#: candidates are locked first (FOR UPDATE SKIP LOCKED in the CTE); the UPDATE then takes
#: only those without a rate or concurrency limit (counted rules: they need a lock and a
#: count, atp.tracker.concurrency), not expired and not paused. The others stay locked by this
#: transaction and ACCEPTED, for the ORM path to judge in the same transaction. The last
#: column counts the candidates, so the caller knows whether any was left to judge; the
#: LEFT JOIN returns that count (with NULLs) even when nothing was claimed.
CLAIM = """
WITH picked AS (
    SELECT id FROM atp_taskinstance
    WHERE status = %(accepted)s AND run_after <= %(now)s {queue_filter} {type_filter}
    ORDER BY {claim_order}
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
claimed AS (
    UPDATE atp_taskinstance AS t
    SET status = %(running)s, server_id = %(server_id)s, received_at = %(now)s,
        started_at = %(now)s, updated_at = %(now)s, attempts = t.attempts + 1
    FROM picked, atp_tasktype AS tt
    WHERE t.id = picked.id AND tt.id = t.type_id AND tt.rate_limit = ''
        AND tt.concurrency_limit IS NULL AND (t.expires IS NULL OR t.expires > %(now)s)
        -- Paused types and queues (atp.tracker.pausing) are left to the ORM path too. Here,
        -- not in "picked": there the planner cannot estimate such a filter and would give
        -- up the claim index for a scan; here it only checks the picked rows. The paused
        -- queues come as constants, and only when there are any: no other table to read.
        AND NOT tt.paused {pause_filter}
    RETURNING t.id, t.uuid, t.identifier, t.input, t.attempts, t.retries, t.priority,
        t.run_after, t.expires, t.queue, t.parent_id,
        tt.identifier AS type_name, tt.handler, tt.soft_time_limit, tt.hard_time_limit,
        tt.timeout
)
SELECT claimed.*, (SELECT count(*) FROM picked) FROM (SELECT 1) AS one
LEFT JOIN claimed ON true
"""

#: The filters ``claim_statement`` writes into ``CLAIM``, each only when the caller asks for it.
QUEUE_FILTER = "AND queue = ANY(%(queues)s)"
TYPE_FILTER = "AND type_id <> ALL(%(excluded)s)"
PAUSE_FILTER = "AND t.queue <> ALL (%(paused_queues)s)"


def order_by(fields) -> str:
    """The SQL ``ORDER BY`` list of Django ordering ``fields``: ``"-priority"`` is
    ``priority DESC``. Column names only (no lookups), as in ``models.CLAIM_ORDER``."""
    return ", ".join(f"{name[1:]} DESC" if name.startswith("-") else name for name in fields)


def claim_statement(claim_order, queues=(), paused_queues=(), exclude_types=()) -> tuple[str, dict]:
    """The claim statement and the parameters its filters add.

    ``claim_order`` is Django's ordering (``models.CLAIM_ORDER``); ``queues`` limits the claim
    to those queues (all when empty), ``paused_queues`` and the type ids ``exclude_types`` are
    passed over.
    """
    params: dict = {}
    queue_filter = ""
    if queues:
        queue_filter, params["queues"] = QUEUE_FILTER, list(queues)
    pause_filter = ""
    if paused_queues:
        pause_filter, params["paused_queues"] = PAUSE_FILTER, list(paused_queues)
    type_filter = ""
    if exclude_types:
        type_filter, params["excluded"] = TYPE_FILTER, list(exclude_types)
    statement = CLAIM.format(
        queue_filter=queue_filter,
        type_filter=type_filter,
        claim_order=order_by(claim_order),
        pause_filter=pause_filter,
    )
    return statement, params
