"""Reads of ATP's models on a read replica through a Django database router (README
"Capacity"): what reads there, and that the tracker still decides on the primary.

The "replica" is a second alias on the test database with a connection of its own. A lag
is simulated by a REPEATABLE READ transaction on it: from its first read on, the replica
sees the database as it was then, as a replica behind its primary would.
"""

from contextlib import contextmanager

import pytest
from django.db import connections, transaction
from django.db.utils import load_backend

from atp import control, query, tracker
from atp.exceptions import TaskNotFound, UnknownTaskType
from atp.models import Status, TaskInstance
from tests.support.admin_fixtures import TASKS
from tests.support.routers import REPLICA

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ROUTERS = "tests.support.routers."


@pytest.fixture
def replica(settings):
    """The "replica" alias (the test database, another connection) and the recommended router.

    Its connection is made here rather than declared in the settings: pytest-django allows
    a test only the databases it was set up with, and a connection made at run time counts
    as none of them.
    """
    default = connections["default"].settings_dict
    backend = load_backend(default["ENGINE"])
    connections[REPLICA] = backend.DatabaseWrapper(dict(default), REPLICA)
    settings.DATABASE_ROUTERS = [ROUTERS + "ReadsOutsideTransactions"]
    yield connections[REPLICA]
    connections[REPLICA].close()
    del connections[REPLICA]


@contextmanager
def lagging(replica):
    """Until the block ends, the replica shows the database as it is now."""
    with transaction.atomic(using=REPLICA), replica.cursor() as cursor:
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cursor.execute("SELECT count(*) FROM atp_taskinstance")  # the snapshot starts here
        yield


def test_the_query_api_the_http_api_and_the_admin_lists_read_the_replica(replica, superuser_client):
    tracker.register_task_type("test.noop", "tests.support.handlers.noop")
    tracker.enqueue_task("test.noop", "before")
    with lagging(replica):
        tracker.enqueue_task("test.noop", "after")  # on the primary only, for now
        assert TaskInstance.objects.using("default").count() == 2
        assert [task.identifier for task in query.iter_tasks()] == ["before"]
        listed = superuser_client.get("/atp/api/tasks").json()
        assert [task["identifier"] for task in listed.values()] == ["before"]
        page = superuser_client.get(TASKS).content.decode()
        assert "before" in page and "after" not in page
    assert sorted(task.identifier for task in query.iter_tasks()) == ["after", "before"]


def claim_and_finish() -> dict:
    """Register a type, enqueue, claim and finish as a view and the daemon do it."""
    with transaction.atomic():  # a view's transaction, as ATOMIC_REQUESTS makes it
        tracker.register_task_type("test.new", "tests.support.handlers.noop")
        task_id = tracker.enqueue_task("test.new", "new")
    (attempt,) = tracker.claim_tasks("server-1", limit=5)
    assert attempt.task_id == task_id
    return tracker.finish_tasks([(attempt.task_id, attempt.number, "None")])


def test_the_tracker_decides_on_the_primary_while_the_replica_lags(replica):
    with lagging(replica):
        assert list(claim_and_finish().values()) == ["finished"]
    assert TaskInstance.objects.get(identifier="new").status == Status.FINISHED


def test_a_router_that_sends_reads_in_transactions_to_the_replica_breaks_the_tracker(
    replica, settings
):
    settings.DATABASE_ROUTERS = [ROUTERS + "AllReads"]
    with lagging(replica), pytest.raises(UnknownTaskType):
        claim_and_finish()  # the enqueue looked its new type up on the replica


def test_lookups_before_a_transaction_read_the_replica(replica):
    """The documented limit: ``enqueue_task`` looks its type up, and ``control`` its task,
    before their transaction; in autocommit that read goes to the replica."""
    with lagging(replica):
        tracker.register_task_type("test.new", "tests.support.handlers.noop")
        with pytest.raises(UnknownTaskType):
            tracker.enqueue_task("test.new", "autocommit")
        with transaction.atomic():
            task_id = tracker.enqueue_task("test.new", "in a transaction")
        with pytest.raises(TaskNotFound):
            control.revoke(task_id)
        with transaction.atomic():
            assert control.revoke(task_id)
    assert TaskInstance.objects.get(pk=task_id).status == Status.REVOKED
