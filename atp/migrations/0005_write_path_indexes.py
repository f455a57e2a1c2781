"""Fewer indexes to write per task, and autovacuum sized for a queue table.

Every status change of a task writes a new row version into every index of the table
(the status is indexed, so PostgreSQL cannot update in place), so an index nobody needs
costs each claim and each finish. Two foreign-key indexes duplicate the first column of
another index (type: the (type, identifier) constraint; a log's task: atp_log_instance_time),
and the parent index held a NULL for every task without a parent; it is now partial.

On PostgreSQL the task table is also told to vacuum and analyse after 2 % of its rows
changed instead of the default 20 %: a queue table turns over its waiting rows all the
time, and dead entries at the head of the claim index would slow every claim until a
vacuum removes them (the README's "PostgreSQL tuning" says more).
"""

import django.db.models.deletion
from django.db import migrations, models

TASK_TABLE_AUTOVACUUM = (
    "autovacuum_vacuum_scale_factor = 0.02, "
    "autovacuum_vacuum_insert_scale_factor = 0.02, "
    "autovacuum_analyze_scale_factor = 0.02"
)


def tune_autovacuum(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE atp_taskinstance SET ({TASK_TABLE_AUTOVACUUM})")


def reset_autovacuum(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "ALTER TABLE atp_taskinstance RESET (autovacuum_vacuum_scale_factor, "
            "autovacuum_vacuum_insert_scale_factor, autovacuum_analyze_scale_factor)"
        )


class Migration(migrations.Migration):
    dependencies = [
        ("atp", "0004_events_eventcursor"),
    ]

    operations = [
        migrations.AlterField(
            model_name="logrecord",
            name="instance",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="log",
                to="atp.taskinstance",
            ),
        ),
        migrations.AlterField(
            model_name="taskinstance",
            name="parent",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="children",
                to="atp.taskinstance",
            ),
        ),
        migrations.AlterField(
            model_name="taskinstance",
            name="type",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="instances",
                to="atp.tasktype",
            ),
        ),
        migrations.AddIndex(
            model_name="taskinstance",
            index=models.Index(
                condition=models.Q(("parent__isnull", False)),
                fields=["parent"],
                name="atp_task_parent",
            ),
        ),
        migrations.RunPython(tune_autovacuum, reset_autovacuum, elidable=False),
    ]
