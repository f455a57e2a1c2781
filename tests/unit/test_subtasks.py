"""Subtasks in-process: the parent's table, its counts, its end, and the duplicate guards."""

import pytest
from django.test import override_settings

from atp import tracker
from atp.daemon.runner import run_task
from atp.exceptions import StaleAttempt
from atp.models import Status, TaskInstance
from atp.tracker import subtasks
from tests.support.helpers import ago

pytestmark = pytest.mark.django_db


@pytest.fixture
def parent(db):
    """Start a fan_out parent of ``count`` item subtasks; return (parent id, subtask ids)."""
    tracker.register_task_type("t.fan", "tests.support.handlers.fan_out")
    tracker.register_task_type("t.item", "tests.support.handlers.item", maxrestart=2)

    def parent(items):
        parent_id = tracker.enqueue_task("t.fan", "p", {"type": "t.item", "items": items})
        assert tracker.dequeue_task("s") == [parent_id]
        run_task(parent_id, "s")
        children = list(
            TaskInstance.objects.filter(parent_id=parent_id)
            .order_by("id")
            .values_list("id", flat=True)
        )
        return parent_id, children

    return parent


def _status(task_id):
    return TaskInstance.objects.get(pk=task_id).status


def _run_one(task_id):
    assert tracker.dequeue_task("s") == [task_id]
    return run_task(task_id, "s")


def test_parent_waits_with_its_table_and_ends_finished_after_the_last_subtask(parent):
    parent_id, children = parent([{"n": n} for n in range(5)])
    progress = subtasks.get_progress(parent_id)
    assert _status(parent_id) == Status.WAITING
    assert len(children) == 5 and progress["total"] == 5
    assert set(progress["subtasks"]) == set(
        TaskInstance.objects.filter(parent_id=parent_id).values_list("identifier", flat=True)
    )
    for child in children[:-1]:
        _run_one(child)
        assert _status(parent_id) == Status.WAITING
    _run_one(children[-1])
    progress = subtasks.get_progress(parent_id)
    assert _status(parent_id) == Status.FINISHED
    assert {k: progress[k] for k in ("attempted", "succeeded", "failed", "skipped")} == {
        "attempted": 5,
        "succeeded": 5,
        "failed": 0,
        "skipped": 0,
    }
    assert all(entry["status"] == "FINISHED" for entry in progress["subtasks"].values())


def test_any_failed_subtask_fails_the_parent_with_the_counts(parent):
    parent_id, children = parent([{"n": 0}, {"n": 1, "fail": True}, {"n": 2}])
    for child in children:
        _run_one(child)
    parent_task = TaskInstance.objects.get(pk=parent_id)
    assert parent_task.status == Status.FAILED
    assert (parent_task.progress["succeeded"], parent_task.progress["failed"]) == (2, 1)
    assert "2 of 3 subtask(s) succeeded, 1 failed" in parent_task.log.latest("id").message


def test_a_restarted_subtask_is_counted_once_and_its_stale_attempt_cannot_count(parent):
    parent_id, (child,) = parent([{"n": 0}])
    assert tracker.dequeue_task("s") == [child]
    first = tracker.begin_attempt(child, server_id="s").number
    tracker.restart_or_fail(child, "lost daemon", attempt=first)  # restart: attempt 2 follows
    assert tracker.dequeue_task("s2") == [child]
    second = tracker.begin_attempt(child, server_id="s2").number
    with pytest.raises(StaleAttempt):
        tracker.stop_task_success(child, attempt=first)
    assert subtasks.get_progress(parent_id)["attempted"] == 0
    tracker.stop_task_success(child, attempt=second)
    progress = subtasks.get_progress(parent_id)
    assert (progress["attempted"], progress["succeeded"], progress["retried"]) == (1, 1, 1)
    assert _status(parent_id) == Status.FINISHED


def test_subtasks_ignore_the_queue_limit_and_are_all_enqueued(parent):
    with override_settings(ATP={"MAX_QUEUE_SIZE": 3}):
        parent_id, children = parent([{"n": n} for n in range(20)])
    assert len(children) == 20 and _status(parent_id) == Status.WAITING


def test_the_table_is_committed_before_subtasks_are_enqueued_atomically_with_waiting(
    parent, monkeypatch
):
    seen = {}

    def refuse(*args, **kwargs):
        # By now the parent's table is in the database (step 1 committed) ...
        seen["total"] = TaskInstance.objects.get(pk=kwargs["parent"]).progress["total"]
        raise RuntimeError("database refused the batch")

    monkeypatch.setattr(subtasks, "enqueue_tasks", refuse)
    parent_id, children = parent([{"n": 0}, {"n": 1}])
    assert seen == {"total": 2}
    # ... and a failed enqueue leaves no subtask and no WAITING parent behind.
    assert children == [] and _status(parent_id) == Status.FAILED


def test_the_zombie_sweep_leaves_a_waiting_parent_alone(parent):
    parent_id, _ = parent([{"n": 0}])
    TaskInstance.objects.filter(pk=parent_id).update(updated_at=ago(10 * 3600))
    assert tracker.reenqueue_zombie_tasks() == []
    assert _status(parent_id) == Status.WAITING


def test_a_revoked_subtask_is_skipped_and_the_parent_fails(parent):
    parent_id, (a, b) = parent([{"n": 0}, {"n": 1}])
    tracker.revoke_task(b, "not needed")
    _run_one(a)
    progress = subtasks.get_progress(parent_id)
    assert (progress["succeeded"], progress["skipped"], progress["attempted"]) == (1, 1, 2)
    assert _status(parent_id) == Status.FAILED


def test_spawn_needs_inputs_and_a_running_task(parent):
    parent_id, _ = parent([])
    assert _status(parent_id) == Status.FAILED
    assert "at least one input" in TaskInstance.objects.get(pk=parent_id).log.latest("id").message


def test_the_parents_progress_is_part_of_its_task_dict(parent):
    from atp import query

    parent_id, children = parent([{"n": n} for n in range(3)])
    waiting = query.as_dict(query.get_task_by_id(parent_id))
    assert (waiting["status"], waiting["progress"]["total"]) == ("WAITING", 3)
    for child in children:
        _run_one(child)
    done = query.as_dict(query.get_task_by_id(parent_id))
    assert done["state"] == "SUCCESS"
    assert (done["progress"]["succeeded"], done["progress"]["failed"]) == (3, 0)
    assert sorted(done["children"]) == sorted(
        str(uuid)
        for uuid in TaskInstance.objects.filter(pk__in=children).values_list("uuid", flat=True)
    )
