"""A long history for the admin benchmark: millions of ended tasks and their log records.

``fill_history(count)`` inserts ``count`` FINISHED tasks (types ``bench.history.*``), each
with the three log records the tracker writes for a task that ran (task-sent, -received,
-succeeded), by ``INSERT … SELECT`` in batches of ``BATCH`` tasks (one transaction each),
then runs ``VACUUM (ANALYZE)``. Their enqueue times are spread evenly over the ``SPAN``
before the fill, in id order, as a table in use has them: the oldest first. PostgreSQL only;
10,000,000 tasks take about 20 minutes and 15 GB.
"""

import time

from django.db import connection

from atp import tracker
from atp.models import Status, TaskInstance

TYPES = [f"bench.history.{name}" for name in ("resize", "ingest", "report", "mail")]
BATCH = 500_000
SPAN_SECONDS = 30 * 24 * 3600

#: One batch: tasks numbered ``start``..``stop`` of ``total``, then their three log records
#: from the rows just inserted (RETURNING), in one statement.
_FILL_SQL = """
WITH tasks AS (
    INSERT INTO atp_taskinstance (type_id, identifier, uuid, status, priority, queue,
        run_after, server_id, attempts, retries, enqueued_at, received_at, started_at,
        finished_at, updated_at)
    SELECT (%(type_ids)s)[1 + n %% %(ntypes)s], 'history-' || n, gen_random_uuid(),
        %(finished)s, 0, 'default', t.enq, 'bench-server-' || (n %% 4), 1, 0, t.enq,
        t.enq + interval '1 second', t.enq + interval '1 second',
        t.enq + interval '3 seconds', t.enq + interval '3 seconds'
    FROM generate_series(%(start)s, %(stop)s) AS n
    CROSS JOIN LATERAL (SELECT %(now)s::timestamptz
        - (%(total)s - n) * (%(span)s::float8 / %(total)s) * interval '1 second'
        - interval '1 minute' AS enq) AS t
    RETURNING id, uuid, identifier, enqueued_at
)
INSERT INTO atp_logrecord (instance_id, time, status, message, event, fields)
SELECT tasks.id, tasks.enqueued_at + e.delay, e.status, '', e.event,
    jsonb_build_object('uuid', tasks.uuid::text, 'identifier', tasks.identifier,
                       'hostname', 'atp@bench', 'pid', 1)
FROM tasks
CROSS JOIN (VALUES (%(accepted)s, 'task-sent', interval '0'),
                   (%(scheduled)s, 'task-received', interval '1 second'),
                   (%(finished)s, 'task-succeeded', interval '3 seconds'))
    AS e(status, event, delay)
"""


def fill_history(count: int, progress=None, vacuum=True) -> float:
    """Insert ``count`` FINISHED tasks with 3 log records each; return the seconds taken.

    ``progress(done)`` is called after each batch. Replaces the history of an earlier fill.
    ``vacuum=False`` skips the final VACUUM (which cannot run inside a transaction: tests).
    """
    if connection.vendor != "postgresql":
        raise SystemExit("--history needs PostgreSQL (DATABASE_URL=postgres://…)")
    started = time.perf_counter()
    for identifier in TYPES:
        tracker.register_task_type(identifier, "atp.bench.throughput.noop")
    type_ids = list(
        tracker.TaskType.objects.filter(identifier__in=TYPES).values_list("pk", flat=True)
    )
    with connection.cursor() as cursor:
        # Raw deletes: the ORM's cascade would load millions of ids into Python first.
        old = "SELECT id FROM atp_taskinstance WHERE type_id = ANY(%s)"
        cursor.execute(f"DELETE FROM atp_logrecord WHERE instance_id IN ({old})", [type_ids])  # noqa: S608
        TaskInstance.objects.filter(type_id__in=type_ids)._raw_delete(connection.alias)
        cursor.execute("SELECT now()")
        now = cursor.fetchone()[0]
        for start in range(1, count + 1, BATCH):
            params = {
                "type_ids": type_ids,
                "ntypes": len(type_ids),
                "start": start,
                "stop": min(start + BATCH - 1, count),
                "total": count,
                "now": now,
                "span": SPAN_SECONDS,
                "accepted": int(Status.ACCEPTED),
                "scheduled": int(Status.SCHEDULED),
                "finished": int(Status.FINISHED),
            }
            cursor.execute(_FILL_SQL, params)
            if progress:
                progress(params["stop"])
        if vacuum:
            cursor.execute("VACUUM (ANALYZE) atp_taskinstance")
            cursor.execute("VACUUM (ANALYZE) atp_logrecord")
    return time.perf_counter() - started
