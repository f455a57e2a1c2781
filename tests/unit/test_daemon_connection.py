"""The daemon's connection policy on PostgreSQL: limits per transaction, a listener that
tests that it hears (atp.daemon.db, atp.daemon.wakeup). PgBouncer itself: test_pgbouncer.py."""

import logging
import select

import pytest
from django.db import connection, transaction

from atp import sql
from atp.daemon import wakeup
from atp.daemon.db import limit_daemon_sessions
from atp.models import Worker

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

LIMITS = {"lock_timeout": "2s", "statement_timeout": "2min"}
IDLE = "idle_in_transaction_session_timeout"


@pytest.fixture
def daemon_limits():
    """This thread's connection as a daemon's (limits on); as before afterwards."""
    wrappers = list(connection.execute_wrappers)
    limit_daemon_sessions(idle_in_transaction=7.0)
    yield
    connection.execute_wrappers[:] = wrappers


def current(cursor, name: str) -> str:
    cursor.execute("SELECT current_setting(%s)", [name])
    return cursor.fetchone()[0]


def session_value(name: str) -> str:
    """The setting in the session itself: asked by the driver's cursor, past the wrapper."""
    with connection.connection.cursor() as raw:
        raw.execute(f"SHOW {name}")
        return raw.fetchone()[0]


def test_every_statement_in_autocommit_has_the_limits_and_the_session_keeps_none(daemon_limits):
    with connection.cursor() as cursor:
        for name, value in LIMITS.items():
            assert current(cursor, name) == value
        assert current(cursor, IDLE) == "7s"
    for name in (*LIMITS, IDLE):
        assert session_value(name) == "0"


def test_a_transaction_has_the_limits_from_its_first_statement_to_its_end(daemon_limits):
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)  # the first statement's own result
        for name, value in LIMITS.items():
            assert current(cursor, name) == value
        assert current(cursor, IDLE) == "7s"
    for name in (*LIMITS, IDLE):
        assert session_value(name) == "0"


def test_results_and_row_counts_are_the_statements_own(daemon_limits):
    for server_id in ("a", "b", "c"):
        Worker.objects.create(server_id=server_id, hostname="h", pid=1)
    assert Worker.objects.filter(server_id__in=["a", "b"]).update(pid=2) == 2  # autocommit
    with transaction.atomic():
        assert Worker.objects.filter(pid=2).update(pid=3) == 2  # first in its transaction
        assert sorted(Worker.objects.values_list("server_id", "pid")) == [
            ("a", 3),
            ("b", 3),
            ("c", 1),
        ]


def test_executemany_opening_a_transaction_gets_the_limits_first(daemon_limits):
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany("SELECT set_config('application_name', %s, true)", [("a",), ("b",)])
        assert current(cursor, "lock_timeout") == "2s"
        assert current(cursor, "application_name") == "b"


def test_a_listener_hears_its_own_test_notification_and_is_not_woken_by_it():
    listener = wakeup.Listener()
    assert listener.connect()
    try:
        assert listener.probe_deadline is not None
        assert select.select(listener.handles(), [], [], 5)[0]
        assert listener.drain() is False  # the test notification is not work
        assert listener.probe_deadline is None
        assert listener.reconnect_at() == float("inf")
    finally:
        listener.close()


def test_a_listener_that_never_hears_its_test_notification_is_given_up(monkeypatch, caplog):
    """What happens behind a transaction pooler (test_pgbouncer.py): nothing arrives."""
    monkeypatch.setattr(wakeup, "PROBE_TIMEOUT", 0.2)
    monkeypatch.setattr(sql, "notify", lambda channel, payload="": None)  # lost on the way
    listener = wakeup.Listener()
    assert listener.connect()
    assert not listener.ensure()  # not yet overdue
    select.select([], [], [], listener.reconnect_at() - wakeup.time.monotonic() + 0.05)
    with caplog.at_level(logging.WARNING, logger="atp.daemon"):
        assert not listener.ensure()
    assert listener.deaf and listener.raw is None
    assert "LISTEN heard nothing" in caplog.text and "LISTEN_DATABASE" in caplog.text
    assert listener.reconnect_at() == float("inf")
    assert not listener.connect() and not listener.ensure()  # polling from now on
