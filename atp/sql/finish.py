"""The batch finish on PostgreSQL: one statement ends the plain succeeded attempts as FINISHED.

``atp.tracker.batch_sql`` runs it and writes the log records; every other ending goes
through the tracker's ORM setters (``atp.tracker.running``).
"""

#: End running attempts as FINISHED. Rows are locked in id order first, the order every
#: batch uses, so two batches can never wait on each other in a cycle. Only the plain
#: case is written: the attempt is current, the task runs or is paused, nobody asked to
#: abort or terminate it, it is not a subtask (whose end counts into its parent) and no
#: task depends on it (its end releases them: ``atp.tracker.dependencies``). The conditions
#: are checked on the locked rows (the CTE), never on the table: that keeps the planner
#: on primary-key lookups, where a stale estimate could otherwise send it scanning the
#: partial indexes that the conditions happen to match.
FINISH = """
WITH locked AS (
    SELECT id, attempts, status, abort_requested_at, kill_signal, parent_id, has_dependents
    FROM atp_taskinstance
    WHERE id = ANY(%(ids)s) ORDER BY id FOR UPDATE
),
plain AS (
    SELECT locked.id, outcome.result FROM locked
    JOIN unnest(%(ids)s::bigint[], %(attempts)s::integer[], %(results)s::text[])
        AS outcome(id, attempt, result)
        ON outcome.id = locked.id AND outcome.attempt = locked.attempts
    WHERE locked.status IN (%(running)s, %(paused)s)
        AND locked.abort_requested_at IS NULL AND locked.kill_signal IS NULL
        AND locked.parent_id IS NULL AND NOT locked.has_dependents
)
UPDATE atp_taskinstance AS t
SET status = %(finished)s, finished_at = %(now)s, updated_at = %(now)s,
    result = plain.result::jsonb
FROM plain
WHERE t.id = plain.id
RETURNING t.id, t.uuid, t.started_at
"""
