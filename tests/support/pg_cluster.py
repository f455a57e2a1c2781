"""A private PostgreSQL cluster for tests that stop, restart or freeze the database server.

The shared cluster on port 5432 serves every test run on this machine (other suites, CI), so
a test must never restart it: these fixtures run one of their own (``atp.bench.cluster``).

The ``private_postgres`` fixture points Django's default connection (and so every daemon
the test starts through ``database_url()``) at a fresh, migrated database on that cluster
for one test, and back afterwards.
"""

from contextlib import contextmanager

import pytest
from django.core.management import call_command
from django.db import connections

from atp.bench.cluster import PgCluster, point_default_at

#: The migrated database each test's database is copied from.
TEMPLATE = "atp_template"
_databases = 0  # databases made so far in this session (their names must differ)


@contextmanager
def default_database_at(url: str):
    """Point Django's default connection at ``url`` until the block ends (PostgreSQL only)."""
    if connections["default"].vendor != "postgresql":
        pytest.skip("the private cluster replaces a PostgreSQL test database")
    with point_default_at(url):
        yield


@pytest.fixture(scope="session")
def pg_cluster(django_db_setup, django_db_blocker):
    """A private PostgreSQL cluster for this test session, with a migrated template database.

    Started once; a test that stops it need not start it again (``private_postgres`` does).
    """
    if connections["default"].vendor != "postgresql":
        pytest.skip("needs PostgreSQL: run with DATABASE_URL=postgres://...")
    cluster = PgCluster().init()
    cluster.start()
    cluster.psql(f"CREATE DATABASE {TEMPLATE}")
    with django_db_blocker.unblock(), default_database_at(cluster.url(TEMPLATE)):
        call_command("migrate", verbosity=0, interactive=False)
    yield cluster
    cluster.destroy()


@pytest.fixture
def private_postgres(pg_cluster, transactional_db):
    """Run the test on a fresh database of the private cluster; yield the ``PgCluster``.

    Depends on ``transactional_db`` so that it is set up after (and torn down before) the
    test database's own fixture: pytest-django then flushes its own database, untouched.
    """
    global _databases
    _databases += 1
    name = f"atp_private_{_databases}"
    if not pg_cluster.running():
        pg_cluster.start()
    pg_cluster.psql(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    with default_database_at(pg_cluster.url(name)):
        yield pg_cluster
    if not pg_cluster.running():
        pg_cluster.start()
    pg_cluster.psql(f"DROP DATABASE {name} WITH (FORCE)")
