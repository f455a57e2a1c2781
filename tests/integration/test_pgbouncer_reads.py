"""The query API behind PgBouncer in transaction mode: why ``atp.W003`` asks for
``DISABLE_SERVER_SIDE_CURSORS`` (a real pgbouncer, ``tests.support.pgbouncer``)."""

import pytest
from django.db import DatabaseError, connection

from atp import query, tracker

pytestmark = pytest.mark.postgres

TASKS = 3 * query.CHUNK_SIZE // 2  # two chunks: iter_tasks has to fetch again


@pytest.fixture
def tasks(through_pgbouncer):
    tracker.register_task_type("test.noop", "tests.support.handlers.noop", max_queue_size=10_000)
    tracker.enqueue_tasks("test.noop", [(f"t{n}", None) for n in range(TASKS)])
    return through_pgbouncer[0]


def iterate_while_another_client_takes_the_session(bouncer) -> int:
    """Read every task with ``iter_tasks``; after its first chunk, another client opens a
    transaction through the pooler, which lends it the session the first chunk ran on (the
    pool hands out its most recently used session first)."""
    found = query.iter_tasks()
    count = 1 if next(found) else 0
    other = bouncer.connect(connection.settings_dict["NAME"])
    other.autocommit = False
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT 1")  # its transaction holds a server session from here
        count += sum(1 for _ in found)
    finally:
        other.close()
    return count


def test_server_side_cursors_do_not_survive_transaction_pooling(tasks):
    # Django's error, or the driver's own when closing the lost cursor raises it again.
    with pytest.raises((DatabaseError, connection.Database.Error), match="does not exist"):
        iterate_while_another_client_takes_the_session(tasks)


def test_iter_tasks_reads_everything_with_server_side_cursors_off(tasks, monkeypatch):
    monkeypatch.setitem(connection.settings_dict, "DISABLE_SERVER_SIDE_CURSORS", True)
    assert iterate_while_another_client_takes_the_session(tasks) == TASKS
