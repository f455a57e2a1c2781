"""A BRIN index on the tasks' enqueue time (PostgreSQL only): the admin's "enqueued" filter.

The admin's task list filtered to tasks enqueued today (or in the last 7 days) had no index
to serve it: its paginator's count read the whole history to find the few rows of today
(503 ms at ten million tasks). Tasks are inserted in enqueue order, so the table's pages
follow ``enqueued_at`` and a BRIN index (one min/max summary per 128 pages: about 100 kB at
ten million rows) finds today's pages at the table's end.

BRIN rather than B-tree: each claim and finish of a task is a non-HOT update that inserts
the new row version into every index of the table. A B-tree insert descends the tree and
writes a leaf entry (and WAL); a BRIN insert reads the page range's summary and, as the
row's ``enqueued_at`` is unchanged and usually already inside it, writes nothing.

SQLite has no BRIN; its tables are small.
"""

from django.db import migrations

INDEX = "atp_task_enqueued_brin"


def create_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"CREATE INDEX {INDEX} ON atp_taskinstance USING brin (enqueued_at)")


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [("atp", "0014_end_tallies")]

    operations = [migrations.RunPython(create_index, drop_index, elidable=False)]
