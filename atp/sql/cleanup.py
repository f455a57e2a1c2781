"""The retention sweep on PostgreSQL: one statement deletes a batch of retired tasks with
everything that points at them.

``atp.tracker.sweeps.delete_retired_tasks`` runs it while no ``pre_delete``/``post_delete``
receiver listens for tasks (the ORM's cascade sends those signals; this statement cannot).
"""

#: Delete up to ``limit`` retired tasks with ids above ``after``, in id order, skipping rows
#: another transaction holds (a sweeper, or a writer still at work on the task). What the
#: models' ``on_delete`` rules do through the ORM is done in the same statement: log
#: records, responses and the task's own dependency edges go (CASCADE); edges that wait on a
#: deleted task, subtasks of a deleted parent and workflows that ended on it keep their row
#: with the link cleared (SET_NULL). A row touched by two parts of one statement would be
#: changed only once, so the SET_NULL parts leave alone the rows the statement deletes.
#: ``cutoffs`` pairs each type with retention (``type_ids``) with its cutoff moment. Keyset
#: order (``id > after``) means no batch walks again over the rows earlier batches deleted,
#: whose index entries stay until VACUUM.
DELETE_RETIRED = """
WITH cutoff AS (
    SELECT * FROM unnest(%(type_ids)s::bigint[], %(cutoffs)s::timestamptz[])
        AS c(type_id, moment)
), doomed AS (
    SELECT t.id FROM atp_taskinstance AS t JOIN cutoff ON cutoff.type_id = t.type_id
    WHERE t.id > %(after)s AND t.status IN ({ended}) AND t.finished_at < cutoff.moment
    ORDER BY t.id
    LIMIT %(limit)s
    FOR UPDATE OF t SKIP LOCKED
), log AS (
    DELETE FROM atp_logrecord WHERE instance_id IN (SELECT id FROM doomed)
), response AS (
    DELETE FROM atp_response WHERE instance_id IN (SELECT id FROM doomed)
), own_edge AS (
    DELETE FROM atp_dependency WHERE task_id IN (SELECT id FROM doomed)
), waiting_edge AS (
    UPDATE atp_dependency SET depends_on_id = NULL
    WHERE depends_on_id IN (SELECT id FROM doomed) AND task_id NOT IN (SELECT id FROM doomed)
), subtask AS (
    UPDATE atp_taskinstance SET parent_id = NULL
    WHERE parent_id IN (SELECT id FROM doomed) AND id NOT IN (SELECT id FROM doomed)
), workflow AS (
    UPDATE atp_workflow SET end_task_id = NULL WHERE end_task_id IN (SELECT id FROM doomed)
)
DELETE FROM atp_taskinstance AS t
USING doomed, atp_tasktype AS tt
WHERE t.id = doomed.id AND tt.id = t.type_id
RETURNING t.id, tt.identifier, t.identifier
"""
