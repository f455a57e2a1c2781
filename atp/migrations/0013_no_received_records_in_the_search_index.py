"""The free-text trigram index leaves ``task-received`` records out (issue 22).

Every claim writes a ``task-received`` record per task, and 0012 put those records in the log's
trigram index (``atp_log_q_text``) so that free text found a task by the daemon that
received it: about 9 % of a draining process pool's rate went into that index (measured:
4,250 → 4,620 tasks/s, ``atpd -n 4``). Daemons are found through the task rows instead
(``atp.query.search._worker_ids``): the registered daemons' names, plus the distinct server
ids of the task rows, read by a loose scan of the (server_id, …) index. The index now covers
``task-sent``, ``task-succeeded`` and ``task-failed`` and no longer the ``server_id`` field.

PostgreSQL only, and only where 0002 could install pg_trgm (as 0012). The expression must stay
identical to ``atp.query.search.log_text()`` and ``SEARCHED_EVENTS``; tests/unit/test_search.py
checks that the planner uses the index.
"""

from django.db import migrations

SEARCHED_FIELDS = ("args", "kwargs", "result", "exception", "identifier", "uuid")
SEARCHED_EVENTS = ("task-sent", "task-succeeded", "task-failed")


def _index(fields, events) -> str:
    text = "lower(" + " || ' ' || ".join(f"COALESCE(fields ->> '{key}', '')" for key in fields)
    predicate = ", ".join(f"'{event}'" for event in events)
    return f"atp_logrecord USING gin (({text})) gin_trgm_ops) WHERE event IN ({predicate})"


LOG_INDEX = _index(SEARCHED_FIELDS, SEARCHED_EVENTS)
#: What 0012 created, for the way back.
OLD_LOG_INDEX = _index(
    (*SEARCHED_FIELDS, "server_id"), ("task-sent", "task-received", "task-succeeded", "task-failed")
)


def _recreate(index: str):
    def recreate(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        with schema_editor.connection.cursor() as cursor:
            cursor.execute("SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'pg_trgm')")
            if not cursor.fetchone()[0]:
                return  # no trigram index was made (0002): search scans
            cursor.execute("DROP INDEX IF EXISTS atp_log_q_text")
            cursor.execute(f"CREATE INDEX atp_log_q_text ON {index}")

    return recreate


class Migration(migrations.Migration):
    dependencies = [("atp", "0012_search_text_in_the_log")]

    operations = [
        migrations.RunPython(_recreate(LOG_INDEX), _recreate(OLD_LOG_INDEX), elidable=False),
    ]
