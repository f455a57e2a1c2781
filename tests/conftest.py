"""Shared fixtures; tests marked ``postgres`` are skipped unless the database is PostgreSQL."""

import pytest
from django.conf import settings

from atp import tracker

# The admin tests' users and clients (superuser, view-only staff, anonymous); a private
# PostgreSQL cluster for tests that stop or restart the database server; a PgBouncer in
# transaction mode in front of the test database.
pytest_plugins = [
    "tests.support.admin_fixtures",
    "tests.support.pg_cluster",
    "tests.support.pgbouncer",
]

ON_POSTGRES = "postgresql" in settings.DATABASES["default"]["ENGINE"]


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs PostgreSQL: run with DATABASE_URL=postgres://...")
    for item in items:
        if "postgres" in item.keywords and not ON_POSTGRES:
            item.add_marker(skip)


@pytest.fixture
def task_type(db):
    """A registered task type whose handler does nothing."""
    return tracker.register_task_type("test.noop", "tests.support.handlers.noop")


@pytest.fixture
def enqueue(task_type):
    """Enqueue a task of ``task_type`` (or another type) and return its id."""

    def enqueue(identifier=None, input=None, type=None, **options):
        return tracker.enqueue_task(type or task_type.identifier, identifier, input, **options)

    return enqueue


@pytest.fixture
def running(enqueue):
    """Enqueue, claim and start a task; return ``(task id, attempt number)``."""

    def running(identifier=None, input=None, server_id="server-1", **options):
        task_id = enqueue(identifier, input, **options)
        assert tracker.dequeue_task(server_id) == [task_id]
        return task_id, tracker.begin_attempt(task_id, server_id=server_id).number

    return running
