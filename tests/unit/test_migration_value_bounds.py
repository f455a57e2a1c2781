"""Migrations 0010 and 0011 repair rows older versions let in: the task list works again.

A far-future eta (``9999-12-31T23:59-12:00``, year 10000 in UTC) was committed on
PostgreSQL, and then ``GET api/tasks`` and the admin's task list answered 500 for everyone:
the row cannot be read into Python. A timeout of 1e11 or NaN made every daemon's sweeps
crash. The migration clamps such values to the bounds, then adds the CHECK constraints.
"""

import pytest
from django.core.management import call_command
from django.db import DataError, connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client

from atp import tracker, validation
from atp.models import TaskInstance, TaskType

BEFORE = ("atp", "0009_worker_instance")
THIS = ("atp", "0011_value_bounds")


@pytest.fixture
def at_0005(transactional_db):
    """The schema before the bounds; migrated forward again afterwards."""
    executor = MigrationExecutor(connection)
    executor.migrate([BEFORE])
    yield
    call_command("migrate", "atp", verbosity=0)


@pytest.mark.postgres
def test_rows_past_the_bounds_are_repaired_and_listed_again(at_0005, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    tracker.register_task_type("old.type", "tests.support.handlers.noop")
    far_id = tracker.enqueue_task("old.type", "far")
    with connection.cursor() as cursor:
        # What the old API wrote for these inputs, unchecked.
        cursor.execute(
            "UPDATE atp_taskinstance SET run_after = '9999-12-31T23:59-12:00', "
            "expires = '10000-06-01T00:00+00' WHERE id = %s",
            [far_id],
        )
        cursor.execute(
            "UPDATE atp_tasktype SET timeout = 'NaN', timeret = 1e11, retry_backoff = 1e12, "
            "hard_time_limit = 'Infinity', soft_time_limit = 0 WHERE identifier = 'old.type'"
        )
    # psycopg2 raises ValueError ("year … is out of range"), psycopg 3 a DataError
    # ("timestamp too large (after year 10K)").
    with pytest.raises((ValueError, DataError), match="year"):
        list(TaskInstance.objects.filter(pk=far_id).values_list("run_after"))

    MigrationExecutor(connection).migrate([THIS])

    task = TaskInstance.objects.get(pk=far_id)
    assert task.run_after == task.expires == validation.MAX_MOMENT
    task_type = TaskType.objects.get(identifier="old.type")
    assert task_type.timeout == task_type.timeret == task_type.retry_backoff == 315_360_000
    assert (task_type.hard_time_limit, task_type.soft_time_limit) == (315_360_000, None)
    client = Client()
    from django.contrib.auth.models import User

    client.force_login(User.objects.create_superuser("root", password="pw"))
    listed = client.get("/atp/api/tasks")
    assert listed.status_code == 200 and str(task.uuid) in listed.json()
    assert client.get("/admin/atp/taskinstance/").status_code == 200
    tracker.revoke_task(far_id)  # the tracker can act on it again
    tracker.delete_task(far_id)
