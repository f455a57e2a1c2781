"""The LISTEN wake-up of an idle daemon survives losing its connection (either driver)."""

import time

import pytest
from django.db import connection

from atp import sql, tracker
from atp.models import Status, TaskInstance
from tests.support.atpd_process import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def listening_backends() -> set[int]:
    """Backends of this database whose last statement was ATP's LISTEN."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND query = %s AND pid <> pg_backend_pid()",
            [f"LISTEN {sql.NOTIFY_CHANNEL}"],
        )
        return {row[0] for row in cursor.fetchall()}


def test_a_lost_listen_connection_is_logged_and_opened_again(daemons):
    """With a 60 s poll interval only NOTIFY can start the task quickly after the loss."""
    tracker.register_task_type("acc.noop", "tests.support.handlers.noop")
    proc = daemons.start("-n", "1", "--poll-interval", "60")
    wait_until(lambda: "atpd started" in daemons.output(proc), what="the daemon to start")
    wait_until(listening_backends, what="the daemon's LISTEN connection")
    (first,) = listening_backends()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [first])

    wait_until(
        lambda: "LISTEN connection lost" in daemons.output(proc), what="the loss to be logged"
    )
    wait_until(lambda: listening_backends() - {first}, what="a new LISTEN connection")
    assert "LISTEN connection back" in daemons.output(proc)
    time.sleep(1)  # the daemon is idle again, waiting on the new connection
    task_id = tracker.enqueue_task("acc.noop", "after-the-loss")
    wait_until(
        lambda: TaskInstance.objects.get(pk=task_id).status == Status.FINISHED,
        timeout=20,
        what="the idle daemon to be woken by NOTIFY on its new connection",
    )
    assert proc.poll() is None, daemons.output(proc)
