"""Free-text search moves off the task rows onto the insert-only log (issue 22).

A task row is written three times in its life (enqueue, claim, finish), and each status
change is a non-HOT update that re-inserts the row into every index of the table; the
trigram index of the task's identifier, uuid and daemon (``atp_task_q_text``) alone
re-inserted about 70 trigrams each time and cost about a fifth of the drain rate. The same
text is now searched where it is written once: the ``task-sent`` record carries the
identifier and uuid, ``task-received`` the daemon's server id, and the log's trigram index
(``atp_log_q_text``) covers those two events beside ``task-succeeded``/``task-failed``.

PostgreSQL only (SQLite has no trigram index; the search runs the same queries there).
The ``task-sent`` records written before this migration get the task's identifier added to
their fields first, so older tasks stay findable by it: one UPDATE over those records, which
on a large history takes a while (minutes per ten million records) and rewrites them.

The expressions must stay identical to ``atp.query.search.log_text()`` and
``SEARCHED_EVENTS``; tests/unit/test_search.py checks that the planner uses the index.
"""

from django.db import migrations

SEARCHED_FIELDS = ("args", "kwargs", "result", "exception", "identifier", "uuid", "server_id")
SEARCHED_EVENTS = ("task-sent", "task-received", "task-succeeded", "task-failed")

LOG_TEXT = (
    "lower("
    + " || ' ' || ".join(f"COALESCE(fields ->> '{key}', '')" for key in SEARCHED_FIELDS)
    + ")"
)
EVENTS = ", ".join(f"'{event}'" for event in SEARCHED_EVENTS)
LOG_INDEX = f"atp_logrecord USING gin (({LOG_TEXT}) gin_trgm_ops) WHERE event IN ({EVENTS})"

# What 0002 created, for the way back.
OLD_TASK_INDEX = (
    "atp_taskinstance USING gin ((lower(identifier || ' ' || uuid::text || ' ' || server_id))"
    " gin_trgm_ops)"
)
OLD_LOG_INDEX = (
    "atp_logrecord USING gin ((lower(COALESCE(fields ->> 'args', '') || ' ' || "
    "COALESCE(fields ->> 'kwargs', '') || ' ' || COALESCE(fields ->> 'result', '') || ' ' || "
    "COALESCE(fields ->> 'exception', ''))) gin_trgm_ops) "
    "WHERE event IN ('task-sent', 'task-succeeded', 'task-failed')"
)

BACKFILL_IDENTIFIERS = """
UPDATE atp_logrecord AS record
SET fields = record.fields || jsonb_build_object('identifier', task.identifier)
FROM atp_taskinstance AS task
WHERE task.id = record.instance_id AND record.event = 'task-sent'
    AND NOT record.fields ? 'identifier'
"""


def _has_trigrams(cursor) -> bool:
    # 0002 creates the trigram indexes only where pg_trgm could be installed.
    cursor.execute("SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'pg_trgm')")
    return cursor.fetchone()[0]


def move_search_to_the_log(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(BACKFILL_IDENTIFIERS)
        cursor.execute("DROP INDEX IF EXISTS atp_task_q_text")
        cursor.execute("DROP INDEX IF EXISTS atp_log_q_text")
        if _has_trigrams(cursor):
            cursor.execute(f"CREATE INDEX atp_log_q_text ON {LOG_INDEX}")


def move_search_back(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("DROP INDEX IF EXISTS atp_log_q_text")
        if _has_trigrams(cursor):
            cursor.execute(f"CREATE INDEX atp_task_q_text ON {OLD_TASK_INDEX}")
            cursor.execute(f"CREATE INDEX atp_log_q_text ON {OLD_LOG_INDEX}")


class Migration(migrations.Migration):
    dependencies = [("atp", "0011_value_bounds")]

    operations = [
        migrations.RunPython(move_search_to_the_log, move_search_back, elidable=False),
    ]
