"""The ``task-pending`` events of a pause in one INSERT … SELECT (``atp.tracker.pending``)."""

from django.db import connection

#: The columns a pause selects its waiting tasks by (never a caller's text in the SQL).
COLUMNS = {"queue": "queue", "type_id": "type_id"}

#: The event fields of every task (``fields``) plus its own uuid, as Celery's text form. SQLite
#: stores a uuid as 32 hex digits, PostgreSQL as a uuid: each spells the dashes its own way.
_FIELDS = {
    "postgresql": "%s::jsonb || jsonb_build_object('uuid', uuid::text)",
    "sqlite": (
        "json_set(%s, '$.uuid', lower(substr(uuid, 1, 8) || '-' || substr(uuid, 9, 4) || '-'"
        " || substr(uuid, 13, 4) || '-' || substr(uuid, 17, 4) || '-' || substr(uuid, 21)))"
    ),
}

_NOTE = """INSERT INTO atp_logrecord (instance_id, time, status, message, event, fields)
SELECT id, %s, status, %s, %s, {fields}
FROM atp_taskinstance WHERE status = %s AND {column} = %s ORDER BY id"""


def note_paused_tasks(where: dict, now, status: int, message: str, event: str, fields: str) -> int:
    """Log ``event`` for every task in ``status`` that matches ``where``; return how many.

    ``where`` is one of ``COLUMNS`` and its value, ``fields`` the event's fields as JSON text
    (every task's ``uuid`` is added), ``message`` the log message. One statement, so a pause
    writes its events at the speed of an insert, whatever the number of waiting tasks.
    """
    ((name, value),) = where.items()
    statement = _NOTE.format(fields=_FIELDS[connection.vendor], column=COLUMNS[name])
    moment = connection.ops.adapt_datetimefield_value(now)
    with connection.cursor() as cursor:
        cursor.execute(statement, [moment, message, event, fields, status, value])
        return cursor.rowcount
