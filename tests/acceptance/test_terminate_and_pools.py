"""revoke(terminate=True) that a handler survives, and handlers that raise BaseException
(issue 15.6 and 15.7), with real daemons."""

import pytest

from atp import control, tracker
from atp.models import Status, TaskInstance
from tests.support.atpd_process import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def status_of(task_id):
    return TaskInstance.objects.get(pk=task_id).status


@pytest.mark.parametrize("handler", ["ignore_sigterm", "catch_sigterm"])
def test_a_terminated_task_ends_revoked_whatever_its_handler_does(daemons, handler):
    """A handler that ignores SIGTERM is killed after the grace period; one that catches it
    and returns normally still ends REVOKED (not FINISHED)."""
    tracker.register_task_type("acc.stubborn", f"tests.support.handlers.{handler}", timeout=600)
    task_id = tracker.enqueue_task("acc.stubborn", "t", {"seconds": 120})
    proc = daemons.start("-n", "1")
    wait_until(lambda: status_of(task_id) == Status.RUNNING, what="the handler to start")
    assert control.revoke(task_id, terminate=True, signal="SIGTERM")
    wait_until(lambda: status_of(task_id) == Status.REVOKED, timeout=60, what="REVOKED")
    record = TaskInstance.objects.get(pk=task_id).log.get(event="task-revoked")
    assert record.fields["terminated"] is True and record.fields["signum"] == 15
    if handler == "ignore_sigterm":
        assert "outlived signal 15" in daemons.output(proc)
    # The daemon serves on: the slot is free again.
    tracker.register_task_type("acc.noop", "tests.support.handlers.noop")
    after = tracker.enqueue_task("acc.noop", "after")
    wait_until(lambda: status_of(after) == Status.FINISHED, what="the next task to run")


def test_the_hard_time_limit_holds_after_a_terminate_signal_is_ignored(daemons):
    """The hard limit (1 s here) is shorter than the grace period: it still kills on time."""
    tracker.register_task_type(
        "acc.stubborn", "tests.support.handlers.ignore_sigterm", hard_time_limit=3, timeout=600
    )
    task_id = tracker.enqueue_task("acc.stubborn", "t", {"seconds": 120})
    daemons.start("-n", "1")
    wait_until(lambda: status_of(task_id) == Status.RUNNING, what="the handler to start")
    control.revoke(task_id, terminate=True)
    wait_until(lambda: status_of(task_id) == Status.REVOKED, timeout=60, what="REVOKED")


@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_handlers_raising_base_exceptions_fail_only_their_task(daemons, pool):
    """KeyboardInterrupt, GeneratorExit, an exception whose __str__ raises: each task FAILS
    with the handler's error; the pool serves the other tasks and the warm stop returns."""
    tracker.register_task_type(
        "acc.base", "tests.support.handlers.raise_base_exception", maxrestart=0
    )
    tracker.register_task_type("acc.echo", "tests.support.handlers.echo")
    kinds = ["KeyboardInterrupt", "GeneratorExit", "Unprintable"]
    bad = {kind: tracker.enqueue_task("acc.base", kind, {"kind": kind}) for kind in kinds}
    good = [tracker.enqueue_task("acc.echo", f"e{n}", {"n": n}) for n in range(8)]
    proc = daemons.start("--burst", "--pool", pool, "-n", "1")
    assert proc.wait(timeout=90) == 0, daemons.output(proc)
    assert {status_of(task_id) for task_id in good} == {Status.FINISHED}
    for kind, task_id in bad.items():
        task = TaskInstance.objects.get(pk=task_id)
        assert task.status == Status.FAILED, kind
        exception = task.log.get(event="task-failed").fields["exception"]
        assert kind in exception and "WorkerLostError" not in exception, exception
