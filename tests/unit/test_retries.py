"""Retries: ``task_status.retry()``, automatic retries of raising handlers, backoff."""

import pytest
from django.utils import timezone

from atp import tracker
from atp.models import LogRecord, Status, TaskInstance
from atp.tracker import retries
from tests.support.helpers import run_task

pytestmark = pytest.mark.django_db


@pytest.fixture
def ceiling_jitter(monkeypatch):
    """Make the jitter draw its upper bound, so the backoff delays are exact."""
    monkeypatch.setattr(retries.random, "uniform", lambda low, high: high)


def _run_until_done(task_id, max_runs=10) -> list[float]:
    """Claim and run the task until it ends; return each retry's delay (run_after - retry)."""
    delays = []
    for _ in range(max_runs):
        assert tracker.dequeue_task("server-1") == [task_id]
        run_task(task_id, "server-1")
        task = TaskInstance.objects.get(pk=task_id)
        if task.status != Status.ACCEPTED:
            return delays
        retried = LogRecord.objects.filter(instance_id=task_id, event="task-retried").latest("id")
        delays.append((task.run_after - retried.time).total_seconds())
        # The task is not due before its run_after; make it due now to run it again.
        if delays[-1] > 0:
            with pytest.raises(tracker.QueueEmpty):
                tracker.dequeue_task("server-1")
        TaskInstance.objects.filter(pk=task_id).update(run_after=timezone.now())
    raise AssertionError("the task never ended")


def _events(task_id) -> list[str]:
    return list(
        LogRecord.objects.filter(instance_id=task_id).order_by("id").values_list("event", flat=True)
    )


def test_retry_backs_off_exponentially_and_succeeds_on_the_third_attempt(ceiling_jitter):
    tracker.register_task_type(
        "t.flaky",
        "tests.support.handlers.flaky",
        max_retries=5,
        retry_backoff=10,
        retry_backoff_max=600,
    )
    task_id = tracker.enqueue_task("t.flaky", "x", {"succeed_on": 3})
    delays = _run_until_done(task_id)
    task = TaskInstance.objects.get(pk=task_id)
    assert task.status == Status.FINISHED
    assert delays == pytest.approx([10.0, 20.0], abs=0.1)  # run_after grows: 10 × 2**retries
    assert (task.attempts, task.retries) == (3, 2)
    events = _events(task_id)
    assert events.count("task-retried") == task.retries == 2
    assert events.count("task-started") == task.attempts == 3
    assert events[-1] == "task-succeeded"
    retried = LogRecord.objects.filter(instance_id=task_id, event="task-retried").first()
    assert "RuntimeError: flaky attempt 1" in retried.fields["exception"]
    assert "Retry 1 of 5" in retried.message


def test_backoff_is_capped_at_retry_backoff_max(ceiling_jitter):
    tracker.register_task_type(
        "t.flaky",
        "tests.support.handlers.flaky",
        max_retries=5,
        retry_backoff=10,
        retry_backoff_max=25,
    )
    task_id = tracker.enqueue_task("t.flaky", "x", {"succeed_on": 4})
    assert _run_until_done(task_id) == pytest.approx([10.0, 20.0, 25.0], abs=0.1)


def test_jitter_stays_between_zero_and_the_ceiling():
    draws = [retries.backoff_delay(1.0, 3, 600) for _ in range(200)]
    assert all(0 <= d <= 8.0 for d in draws)
    assert len(set(draws)) > 1  # jittered, not a constant


def test_used_up_max_retries_fail_the_task_with_a_clear_message():
    tracker.register_task_type(
        "t.flaky", "tests.support.handlers.flaky", max_retries=2, retry_backoff=0
    )
    task_id = tracker.enqueue_task("t.flaky", "x", {"succeed_on": 99})
    assert len(_run_until_done(task_id)) == 2
    task = TaskInstance.objects.get(pk=task_id)
    assert task.status == Status.FAILED
    assert (task.attempts, task.retries) == (3, 2)
    failed = LogRecord.objects.filter(instance_id=task_id).latest("id")
    assert failed.event == "task-failed"
    assert "max_retries" in failed.message and "flaky attempt 3" in failed.message


def test_countdown_overrides_the_backoff():
    tracker.register_task_type(
        "t.cd", "tests.support.retry_handlers.retry_with_countdown", max_retries=1
    )
    task_id = tracker.enqueue_task("t.cd", "x", {"countdown": 42})
    assert tracker.dequeue_task("s") == [task_id]
    assert run_task(task_id, "s") == "unchanged"
    task = TaskInstance.objects.get(pk=task_id)
    retried = LogRecord.objects.filter(instance_id=task_id).latest("id")
    assert task.status == Status.ACCEPTED
    assert round((task.run_after - retried.time).total_seconds()) == 42


def test_a_raising_handler_is_retried_automatically_until_max_retries(ceiling_jitter):
    tracker.register_task_type(
        "t.raise", "tests.support.handlers.flaky_raise", max_retries=1, retry_backoff=1
    )
    task_id = tracker.enqueue_task("t.raise", "x", {"succeed_on": 99})
    assert _run_until_done(task_id) == pytest.approx([1.0], abs=0.1)
    task = TaskInstance.objects.get(pk=task_id)
    assert (task.status, task.retries, task.attempts) == (Status.FAILED, 1, 2)
    assert (
        "ConnectionRefusedError"
        in LogRecord.objects.filter(instance_id=task_id, event="task-retried")
        .get()
        .fields["exception"]
    )


def test_retries_do_not_use_up_restarts():
    tracker.register_task_type(
        "t.flaky", "tests.support.handlers.flaky", max_retries=3, retry_backoff=0, maxrestart=0
    )
    task_id = tracker.enqueue_task("t.flaky", "x", {"succeed_on": 3})
    _run_until_done(task_id)
    assert tracker.get_task_status(task_id).status == Status.FINISHED
    # A zombie now would still get its restart: attempts - retries - 1 == 0 restarts used.
    task = TaskInstance.objects.get(pk=task_id)
    assert task.attempts - task.retries - 1 == 0
