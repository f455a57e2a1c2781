"""Subtasks in-process: the parent's table, its counts, its end, and the duplicate guards."""

import pytest
from django.test import override_settings

from atp import tracker
from atp.exceptions import InvalidInput, InvalidTransition, StaleAttempt
from atp.models import Status, TaskInstance
from atp.taskstatus import TaskStatus
from atp.tracker import subtasks
from tests.support.helpers import ago, nothing_written, run_task

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


# --- issue 14, points 6 to 10 -------------------------------------------------------------


def _running(type_identifier, identifier="p", task_input=None):
    """Enqueue, claim and start one task; return (task id, attempt number)."""
    task_id = tracker.enqueue_task(type_identifier, identifier, task_input)
    assert tracker.dequeue_task("s") == [task_id]
    return task_id, tracker.begin_attempt(task_id, server_id="s").number


def test_spawning_from_a_paused_task_writes_nothing(parent):
    task_id, attempt = _running("t.fan")
    tracker.pause_task(task_id, attempt=attempt)
    records = TaskInstance.objects.get(pk=task_id).log.count()
    with nothing_written(), pytest.raises(InvalidTransition, match="only a RUNNING task"):
        subtasks.spawn_subtasks(task_id, "t.item", [{"n": 0}, {"n": 1}], attempt=attempt)
    task = TaskInstance.objects.get(pk=task_id)
    assert (task.status, task.progress, task.log.count()) == (Status.PAUSED, None, records)
    assert not TaskInstance.objects.filter(parent_id=task_id).exists()


def test_a_failed_enqueue_of_the_subtasks_leaves_no_table_either(parent, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("database refused the batch")

    monkeypatch.setattr(subtasks, "enqueue_tasks", refuse)
    task_id, attempt = _running("t.fan")
    with pytest.raises(RuntimeError):
        subtasks.spawn_subtasks(task_id, "t.item", [{"n": 0}], attempt=attempt)
    task = TaskInstance.objects.get(pk=task_id)
    assert (task.status, task.progress) == (Status.RUNNING, None)


def test_a_waiting_parents_handler_cannot_end_it(parent):
    tracker.register_task_type("t.fan_ok", "tests.support.handlers.fan_out_then_succeed")
    parent_id = tracker.enqueue_task(
        "t.fan_ok", "p2", {"type": "t.item", "items": [{"fail": True}] * 2}
    )
    _run_one(parent_id)  # the handler spawns, then calls set_success(): refused
    assert _status(parent_id) == Status.WAITING
    for child in TaskInstance.objects.filter(parent_id=parent_id).order_by("pk"):
        _run_one(child.pk)
    task = TaskInstance.objects.get(pk=parent_id)
    assert task.status == Status.FAILED  # the roll-up decides: 0 of 2 succeeded
    assert (task.progress["total"], task.progress["failed"]) == (2, 2)


def test_set_success_of_a_waiting_parent_raises_and_a_revoke_still_ends_it(parent):
    task_id, attempt = _running("t.fan")
    status = TaskStatus(task_id, attempt)
    status.spawn_subtasks("t.item", [{"n": 0}])
    for end in (status.set_success, status.set_failure):
        with pytest.raises(InvalidTransition, match="WAITING for its subtasks"):
            end("done early")
    assert _status(task_id) == Status.WAITING
    tracker.revoke_task(task_id, "operator")
    assert _status(task_id) == Status.REVOKED


def test_deleting_a_subtask_counts_it_as_revoked(parent):
    parent_id, (a, b, c) = parent([{"n": 0}, {"n": 1}, {"n": 2}])
    assert tracker.delete_task(b)
    progress = subtasks.get_progress(parent_id)
    assert (progress["skipped"], progress["attempted"], _status(parent_id)) == (
        1,
        1,
        Status.WAITING,
    )
    entry = next(e for e in progress["subtasks"].values() if e.get("id") == b)
    assert (entry["status"], entry["deleted"]) == ("REVOKED", True)
    _run_one(a)
    tracker.delete_task_by_identifier("t.item", TaskInstance.objects.get(pk=c).identifier)
    task = TaskInstance.objects.get(pk=parent_id)
    assert task.status == Status.FAILED
    assert "1 of 3 subtask(s) succeeded, 0 failed, 2 skipped (2 deleted)" in (
        task.log.latest("id").message
    )


def test_unregistering_the_subtasks_type_ends_the_parent(parent):
    parent_id, children = parent([{"n": 0}, {"n": 1}])
    tracker.unregister_task_type("t.item", force=True)
    task = TaskInstance.objects.get(pk=parent_id)
    assert (task.status, task.progress["skipped"]) == (Status.FAILED, 2)
    assert not TaskInstance.objects.filter(pk__in=children).exists()


def test_the_admin_delete_counts_the_subtask_too(parent, rf, admin_user):
    from django.contrib.admin.sites import site

    parent_id, (a, b) = parent([{"n": 0}, {"n": 1}])
    request = rf.post("/")
    request.user = admin_user
    site._registry[TaskInstance].delete_queryset(request, TaskInstance.objects.filter(pk=a))
    site._registry[TaskInstance].delete_model(request, TaskInstance.objects.get(pk=b))
    assert _status(parent_id) == Status.FAILED
    assert subtasks.get_progress(parent_id)["skipped"] == 2


def test_the_sweep_ends_parents_whose_subtasks_vanished_without_the_tracker(parent):
    parent_id, (a, b) = parent([{"n": 0}, {"n": 1}])
    _run_one(a)
    TaskInstance.objects.filter(pk=b).delete()  # raw: the tracker never sees it
    assert _status(parent_id) == Status.WAITING
    assert subtasks.settle_waiting_parents() == [(parent_id, "t.fan::p")]
    task = TaskInstance.objects.get(pk=parent_id)
    assert (task.status, task.progress["succeeded"], task.progress["skipped"]) == (
        Status.FAILED,
        1,
        1,
    )
    assert subtasks.settle_waiting_parents() == []  # ended parents are left alone


def test_the_sweep_leaves_parents_with_running_subtasks_alone(parent):
    parent_id, (a, b) = parent([{"n": 0}, {"n": 1}])
    _run_one(a)
    assert subtasks.settle_waiting_parents() == []
    assert _status(parent_id) == Status.WAITING


def test_a_child_the_parents_table_does_not_list_is_refused(parent):
    parent_id, _ = parent([{"n": 0}])
    with nothing_written(), pytest.raises(InvalidInput, match="parent: task .* waits only"):
        tracker.enqueue_task("t.item", "stranger", {"n": 9}, parent=parent_id)
    # A parent without a table is lineage only: its children are accepted (and not counted).
    plain = tracker.enqueue_task("t.item", "plain-parent", {})
    child = tracker.enqueue_task("t.item", "plain-child", {}, parent=plain)
    assert TaskInstance.objects.get(pk=child).parent_id == plain


def test_item_counts_roll_up_to_the_parent_and_show_in_its_task_dict(db):
    from atp import query

    tracker.register_task_type("t.fan", "tests.support.handlers.fan_out")
    tracker.register_task_type("t.count", "tests.support.handlers.counting_item")
    items = [
        {"counts": [{"succeeded": 3}, {"succeeded": 1, "failed": 1}]},
        {"counts": [{"skipped": 2}, {"attempted": 4, "succeeded": 2, "failed": 2}]},
    ]
    parent_id = tracker.enqueue_task("t.fan", "p", {"type": "t.count", "items": items})
    _run_one(parent_id)
    for child in TaskInstance.objects.filter(parent_id=parent_id).order_by("pk"):
        _run_one(child.pk)
    task = TaskInstance.objects.get(pk=parent_id)
    expected = {"attempted": 9, "succeeded": 6, "failed": 3, "skipped": 2}
    assert (task.status, task.progress["items"]) == (Status.FINISHED, expected)
    assert query.as_dict(query.get_task_by_id(parent_id))["items"] == expected
    entries = [entry["items"] for entry in task.progress["subtasks"].values()]
    assert sorted(entry["attempted"] for entry in entries) == [4, 5]


def test_a_restarted_subtasks_earlier_counts_stop_counting(parent):
    parent_id, (child,) = parent([{"n": 0}])
    assert tracker.dequeue_task("s") == [child]
    first = tracker.begin_attempt(child, server_id="s").number
    subtasks.add_item_counts(child, attempt=first, succeeded=5)
    tracker.restart_or_fail(child, "lost daemon", attempt=first)
    with pytest.raises(StaleAttempt):
        subtasks.add_item_counts(child, attempt=first, succeeded=1)
    assert tracker.dequeue_task("s") == [child]
    second = tracker.begin_attempt(child, server_id="s").number
    assert subtasks.add_item_counts(child, attempt=second, succeeded=2, skipped=1) == {
        "attempted": 2,
        "succeeded": 2,
        "failed": 0,
        "skipped": 1,
    }
    assert subtasks.get_progress(parent_id)["items"] == {
        "attempted": 2,
        "succeeded": 2,
        "failed": 0,
        "skipped": 1,
    }


@pytest.mark.parametrize(
    ("counts", "match"),
    [({"succeeded": -1}, "succeeded must be at least 0"), ({"failed": 1.5}, "failed must be")],
)
def test_bad_item_counts_are_refused(parent, counts, match):
    parent_id, (child,) = parent([{"n": 0}])
    assert tracker.dequeue_task("s") == [child]
    attempt = tracker.begin_attempt(child, server_id="s").number
    with pytest.raises(InvalidInput, match=match):
        subtasks.add_item_counts(child, attempt=attempt, **counts)
    assert subtasks.get_progress(parent_id)["items"]["attempted"] == 0


def test_item_counts_need_a_listed_subtask(parent):
    task_id, attempt = _running("t.item", "alone", {})
    with pytest.raises(InvalidInput, match="not a subtask"):
        TaskStatus(task_id, attempt).add_item_counts(succeeded=1)
