"""Indexes for atp.query: filters and sorts by state, type, worker and received time, and search.

They are vendor-specific, so they are created here with SQL instead of in ``Meta.indexes``:
- Sorting puts missing times first ascending (as Flower does); on PostgreSQL that needs
  ``NULLS FIRST`` in the index (SQLite has it by default and rejects the clause).
- On PostgreSQL only: GIN pg_trgm indexes for substring search (created only if the pg_trgm
  extension can be installed; search still works without them, by scanning) and a GIN
  ``jsonb_path_ops`` index on the input for ``kwargs:key=value``.

The trigram index expressions must stay identical to ``atp.search.task_text()`` and
``log_text()``; tests/unit/test_search.py checks on PostgreSQL that the planner uses them.
"""

import warnings

from django.db import DatabaseError, migrations, transaction

RECEIVED = "received_at NULLS FIRST, id"

BTREE = {
    # Unfiltered lists sorted by received time.
    "atp_task_q_received": f"atp_taskinstance ({RECEIVED})",
    # state=… sorted by received time.
    "atp_task_q_state_received": f"atp_taskinstance (status, {RECEIVED})",
    # state=… and type=… sorted by received time (the operators' most common page).
    "atp_task_q_type_state_received": f"atp_taskinstance (type_id, status, {RECEIVED})",
    # type=… sorted by received time; also the rate-limit window count of the claim.
    "atp_task_q_type_received": f"atp_taskinstance (type_id, {RECEIVED})",
    # worker=… sorted by received time.
    "atp_task_q_worker_received": f"atp_taskinstance (server_id, {RECEIVED})",
}

POSTGRES_GIN = {
    "atp_task_q_input": "atp_taskinstance USING gin (input jsonb_path_ops)",
}

TASK_TEXT = "lower(identifier || ' ' || uuid::text || ' ' || server_id)"
LOG_TEXT = (
    "lower(COALESCE(fields ->> 'args', '') || ' ' || COALESCE(fields ->> 'kwargs', '') || ' ' "
    "|| COALESCE(fields ->> 'result', '') || ' ' || COALESCE(fields ->> 'exception', ''))"
)
POSTGRES_TRIGRAM = {
    "atp_task_q_text": f"atp_taskinstance USING gin (({TASK_TEXT}) gin_trgm_ops)",
    "atp_log_q_text": (
        f"atp_logrecord USING gin (({LOG_TEXT}) gin_trgm_ops) "
        "WHERE event IN ('task-sent', 'task-succeeded', 'task-failed')"
    ),
}

ALL = [*BTREE, *POSTGRES_GIN, *POSTGRES_TRIGRAM]


def create_indexes(apps, schema_editor):
    connection = schema_editor.connection
    postgres = connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        for name, target in BTREE.items():
            if not postgres:
                target = target.replace(" NULLS FIRST", "")
            cursor.execute(f"CREATE INDEX {name} ON {target}")
        if not postgres:
            return
        for name, target in POSTGRES_GIN.items():
            cursor.execute(f"CREATE INDEX {name} ON {target}")
        try:
            with transaction.atomic(using=connection.alias):
                cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        except DatabaseError as exc:
            warnings.warn(
                f"pg_trgm is not available ({exc}); ATP's task search will work without "
                "its trigram indexes, by scanning. Install the extension and re-run this "
                "migration for fast substring search.",
                stacklevel=1,
            )
            return
        for name, target in POSTGRES_TRIGRAM.items():
            cursor.execute(f"CREATE INDEX {name} ON {target}")


def drop_indexes(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        for name in ALL:
            cursor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("atp", "0001_initial")]

    operations = [migrations.RunPython(create_indexes, drop_indexes, elidable=False)]
