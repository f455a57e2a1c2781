"""1 parent × 500 subtasks over two real daemons on PostgreSQL, with and without a crash."""

import os
import signal

import pytest
from django.db.models import Max

from atp import tracker
from atp.models import Status, TaskInstance
from atp.tracker import subtasks
from tests.support.atpd_process import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]

COUNT = 500


def _fan_out(items):
    tracker.register_task_type("acc.fan", "tests.support.handlers.fan_out")
    tracker.register_task_type("acc.item", "tests.support.handlers.item", maxrestart=3)
    return tracker.enqueue_task("acc.fan", "parent", {"type": "acc.item", "items": items})


def _ended(parent_id) -> bool:
    return TaskInstance.objects.get(pk=parent_id).status in (Status.FINISHED, Status.FAILED)


def _assert_parent_ended_after_its_last_subtask(parent_id):
    parent = TaskInstance.objects.get(pk=parent_id)
    last = TaskInstance.objects.filter(parent_id=parent_id).aggregate(Max("finished_at"))
    assert parent.finished_at >= last["finished_at__max"]
    assert not TaskInstance.objects.filter(parent_id=parent_id, finished_at__isnull=True).exists()


def test_five_hundred_subtasks_on_two_daemons_count_exactly_and_fail_the_parent(daemons):
    items = [{"n": n, "fail": n % 50 == 0} for n in range(COUNT)]
    parent_id = _fan_out(items)
    for _ in range(2):
        daemons.start("-n", "4")
    wait_until(lambda: _ended(parent_id), timeout=60, what="the parent to end")
    progress = subtasks.get_progress(parent_id)
    assert TaskInstance.objects.get(pk=parent_id).status == Status.FAILED  # 10 failed
    assert (progress["total"], progress["attempted"]) == (COUNT, COUNT)
    assert (progress["succeeded"], progress["failed"], progress["skipped"]) == (490, 10, 0)
    assert TaskInstance.objects.filter(parent_id=parent_id, status=Status.FAILED).count() == 10
    # Both daemons did part of the work.
    servers = TaskInstance.objects.filter(parent_id=parent_id).values_list("server_id", flat=True)
    assert len(set(servers)) == 2
    _assert_parent_ended_after_its_last_subtask(parent_id)


def test_counts_stay_exact_when_one_daemon_is_killed_mid_run(daemons):
    parent_id = _fan_out([{"n": n, "sleep": 0.02} for n in range(COUNT)])
    victim = daemons.start("-n", "4")
    daemons.start("-n", "4")
    wait_until(
        lambda: (
            subtasks.get_progress(parent_id)
            and subtasks.get_progress(parent_id)["attempted"] >= 100
        ),
        timeout=60,
        what="a fifth of the subtasks",
    )
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    wait_until(lambda: _ended(parent_id), timeout=90, what="the parent to end")
    progress = subtasks.get_progress(parent_id)
    assert TaskInstance.objects.get(pk=parent_id).status == Status.FINISHED
    assert (progress["attempted"], progress["succeeded"], progress["failed"]) == (COUNT, COUNT, 0)
    restarted = TaskInstance.objects.filter(parent_id=parent_id, attempts__gt=1).count()
    assert restarted >= 1  # the killed daemon's subtasks ran again ...
    assert progress["retried"] == sum(  # ... and each was still counted once
        max(a - 1, 0)
        for a in TaskInstance.objects.filter(parent_id=parent_id).values_list("attempts", flat=True)
    )
    _assert_parent_ended_after_its_last_subtask(parent_id)


def test_item_counts_from_concurrent_subtasks_add_up_exactly(daemons):
    """Issue 14.10: 40 subtasks on two daemons × 4 handlers each report 25 counts at once."""
    tracker.register_task_type("acc.fan", "tests.support.handlers.fan_out")
    tracker.register_task_type("acc.count", "tests.support.handlers.counting_item")
    steps = [{"succeeded": 1}, {"failed": 1}, {"skipped": 1}, {"succeeded": 2}, {"failed": 0}]
    items = [{"counts": steps * 5} for _ in range(40)]
    parent_id = tracker.enqueue_task("acc.fan", "parent", {"type": "acc.count", "items": items})
    for _ in range(2):
        daemons.start("-n", "4")
    wait_until(lambda: _ended(parent_id), timeout=90, what="the parent to end")
    parent = TaskInstance.objects.get(pk=parent_id)
    assert parent.status == Status.FINISHED
    # Per subtask: 5 × (1 + 2) succeeded, 5 × 1 failed, 5 × 1 skipped; attempted = s + f.
    assert parent.progress["items"] == {
        "attempted": 40 * 20,
        "succeeded": 40 * 15,
        "failed": 40 * 5,
        "skipped": 40 * 5,
    }
    assert all(entry["items"]["attempted"] == 20 for entry in parent.progress["subtasks"].values())
