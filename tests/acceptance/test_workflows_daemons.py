"""Workflows on real daemons on PostgreSQL: results flow, a crash costs no callback twice."""

import os
import signal

import pytest

from atp import tracker, workflows
from atp.models import Status, TaskInstance
from tests.support.atpd_process import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]

H = "tests.support.workflow_handlers."


def _register():
    for name in ("add_one", "square_slowly", "total", "results", "fail"):
        tracker.register_task_type(f"wf.{name}", H + name, maxrestart=3)


def _ended(task_id) -> bool:
    return TaskInstance.objects.get(pk=task_id).status in (
        Status.FINISHED,
        Status.FAILED,
        Status.REVOKED,
    )


def _events(task_id) -> list[str]:
    return list(
        TaskInstance.objects.get(pk=task_id).log.order_by("id").values_list("event", flat=True)
    )


def test_a_chain_of_three_adds_up_to_three_on_two_daemons(daemons):
    _register()
    handle = workflows.chain(*(workflows.task("wf.add_one") for _ in range(3))).enqueue()
    daemons.start("-n", "2")
    daemons.start("-n", "2")
    wait_until(lambda: _ended(handle.end_task_id), timeout=60, what="the chain to end")
    assert TaskInstance.objects.get(pk=handle.end_task_id).result == 3
    assert workflows.workflow_state(handle.workflow_id)["state"] == "succeeded"


def test_a_chord_of_fifty_survives_a_killed_daemon_and_its_callback_runs_once(daemons):
    _register()
    squares = [workflows.task("wf.square_slowly", {"x": x, "sleep": 0.05}) for x in range(1, 51)]
    handle = workflows.chord(squares, workflows.task("wf.total")).enqueue()
    group_ids = handle.task_ids[:-1]
    victim = daemons.start("-n", "2")
    daemons.start("-n", "2")
    wait_until(
        lambda: TaskInstance.objects.filter(pk__in=group_ids, status=Status.FINISHED).count() >= 8,
        timeout=60,
        what="part of the group to finish",
    )
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    wait_until(lambda: _ended(handle.end_task_id), timeout=90, what="the callback to end")
    callback = TaskInstance.objects.get(pk=handle.end_task_id)
    assert callback.status == Status.FINISHED
    assert callback.result == sum(x * x for x in range(1, 51))
    assert callback.attempts == 1
    events = _events(callback.pk)
    assert events.count("task-started") == 1 and events.count("task-succeeded") == 1
    assert not TaskInstance.objects.filter(pk__in=group_ids).exclude(status=Status.FINISHED)


def test_a_failure_in_the_middle_revokes_the_rest_and_run_runs_it_anyway(daemons):
    _register()
    revoking = workflows.chain(
        workflows.task("wf.add_one"),
        workflows.task("wf.fail"),
        workflows.task("wf.add_one"),
        workflows.task("wf.add_one"),
    ).enqueue()
    running = workflows.chain(
        workflows.task("wf.fail"), workflows.task("wf.results", on_dependency_failure="run")
    ).enqueue()
    daemons.start("-n", "2")
    wait_until(
        lambda: _ended(revoking.end_task_id) and _ended(running.end_task_id),
        timeout=60,
        what="both chains to end",
    )
    statuses = [TaskInstance.objects.get(pk=t).status_name for t in revoking.task_ids]
    assert statuses == ["FINISHED", "FAILED", "REVOKED", "REVOKED"]
    assert "task-started" not in _events(revoking.task_ids[2])
    anyway = TaskInstance.objects.get(pk=running.end_task_id)
    assert (anyway.status_name, anyway.result) == ("FINISHED", [None])
