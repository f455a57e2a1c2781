"""Bounds on every number and moment (issue 15), step 2: the CHECK constraints.

They hold the bounds of atp.validation; 0010 clamped the rows outside them first.
"""

import datetime
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("atp", "0010_repair_out_of_range_rows"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="tasktype",
            name="atp_tasktype_timeout_gt_0",
        ),
        migrations.AddConstraint(
            model_name="taskinstance",
            constraint=models.CheckConstraint(
                condition=models.Q(("priority__gte", -2147483648), ("priority__lte", 2147483647)),
                name="atp_task_priority",
            ),
        ),
        migrations.AddConstraint(
            model_name="taskinstance",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("run_after__gte", datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.UTC)),
                    ("run_after__lte", datetime.datetime(9999, 12, 30, 0, 0, tzinfo=datetime.UTC)),
                    models.Q(
                        ("expires__isnull", True),
                        models.Q(
                            ("expires__gte", datetime.datetime(1, 1, 2, 0, 0, tzinfo=datetime.UTC)),
                            (
                                "expires__lte",
                                datetime.datetime(9999, 12, 30, 0, 0, tzinfo=datetime.UTC),
                            ),
                        ),
                        _connector="OR",
                    ),
                ),
                name="atp_task_moments",
            ),
        ),
        migrations.AddConstraint(
            model_name="tasktype",
            constraint=models.CheckConstraint(
                condition=models.Q(("timeout__gt", 0), ("timeout__lte", 315360000)),
                name="atp_tasktype_timeout",
            ),
        ),
        migrations.AddConstraint(
            model_name="tasktype",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("timeret", -1),
                    models.Q(("timeret__gt", 0), ("timeret__lte", 315360000)),
                    _connector="OR",
                ),
                name="atp_tasktype_timeret",
            ),
        ),
        migrations.AddConstraint(
            model_name="tasktype",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("retry_backoff__gte", 0),
                    ("retry_backoff__lte", 315360000),
                    ("retry_backoff_max__gte", 0),
                    ("retry_backoff_max__lte", 315360000),
                ),
                name="atp_tasktype_retry_backoff",
            ),
        ),
        migrations.AddConstraint(
            model_name="tasktype",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(
                        ("soft_time_limit__isnull", True),
                        models.Q(("soft_time_limit__gt", 0), ("soft_time_limit__lte", 315360000)),
                        _connector="OR",
                    ),
                    models.Q(
                        ("hard_time_limit__isnull", True),
                        models.Q(("hard_time_limit__gt", 0), ("hard_time_limit__lte", 315360000)),
                        _connector="OR",
                    ),
                ),
                name="atp_tasktype_time_limits",
            ),
        ),
        migrations.AddConstraint(
            model_name="tasktype",
            constraint=models.CheckConstraint(
                condition=models.Q(("priority__gte", -2147483648), ("priority__lte", 2147483647)),
                name="atp_tasktype_priority",
            ),
        ),
        migrations.AddConstraint(
            model_name="tasktype",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("max_retries__lte", 2147483647),
                    ("maxrestart__lte", 2147483647),
                    models.Q(
                        ("max_queue_size__isnull", True),
                        ("max_queue_size__lte", 2147483647),
                        _connector="OR",
                    ),
                ),
                name="atp_tasktype_counts",
            ),
        ),
    ]
