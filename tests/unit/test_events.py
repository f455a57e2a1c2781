"""Stored Celery events: their fields, the on-commit signals, and replay into Celery's State."""

import pytest
from django.db import transaction

from atp import events, tracker
from atp.models import LogRecord, TaskInstance

DAEMON_A = events.daemon_node_name("0xA", "host-a")
DAEMON_B = events.daemon_node_name("0xB", "host-b")


@pytest.fixture
def as_node():
    """Switch the name events are sent under (what a daemon does at start), then restore it."""

    def as_node(name):
        events.set_node_name(name)

    yield as_node
    events.set_node_name(None)


def fields_of(task_id, event):
    return LogRecord.objects.get(instance_id=task_id, event=event).fields


def test_client_and_daemon_events_carry_their_own_hostnames(enqueue, as_node):
    task_id = enqueue(input={"x": 1})
    as_node(DAEMON_A)
    tracker.dequeue_task("0xA")
    attempt = tracker.begin_attempt(task_id, server_id="0xA").number
    tracker.stop_task_success(task_id, attempt=attempt, result={"ok": True})

    sent = fields_of(task_id, events.TASK_SENT)
    assert sent["hostname"].startswith("atp@")
    assert sent["kwargs"] == "{'x': 1}" and sent["args"] == "()"
    task = TaskInstance.objects.get(pk=task_id)
    received = fields_of(task_id, events.TASK_RECEIVED)
    assert received["hostname"] == DAEMON_A
    # Celery's task-received carries the lineage as task-sent does.
    assert received["root_id"] == str(task.uuid) and received["parent_id"] is None
    assert {"name", "args", "kwargs", "retries", "eta", "expires"} <= set(received)
    assert fields_of(task_id, events.TASK_STARTED)["hostname"] == DAEMON_A
    succeeded = fields_of(task_id, events.TASK_SUCCEEDED)
    assert succeeded["result"] == "{'ok': True}" and succeeded["runtime"] >= 0
    for record in LogRecord.objects.filter(instance_id=task_id):
        assert {"uuid", "timestamp", "hostname", "pid", "utcoffset"} <= set(record.fields)


@pytest.mark.django_db(transaction=True)
def test_signals_fire_on_commit_only(task_type):
    seen = []

    def listener(sender, event, fields, record, **kwargs):
        seen.append((event, fields["uuid"], record.pk))

    events.task_event.connect(listener)
    only_sent = []
    events.task_sent.connect(lambda sender, **kw: only_sent.append(kw["event"]), weak=False)
    try:
        with transaction.atomic():
            task_id = tracker.enqueue_task(task_type.identifier, "kept")
            assert seen == []  # not before the commit
        assert seen == [
            (events.TASK_SENT, str(TaskInstance.objects.get(pk=task_id).uuid), seen[0][2])
        ]
        assert seen[0][2] is not None
        with pytest.raises(RuntimeError), transaction.atomic():
            tracker.enqueue_task(task_type.identifier, "rolled-back")
            raise RuntimeError
        tracker.revoke_task(task_id)
        assert [event for event, _, _ in seen] == [events.TASK_SENT, events.TASK_REVOKED]
        assert only_sent == [events.TASK_SENT]
    finally:
        events.task_event.disconnect(listener)
        events.task_sent.receivers.clear()
        events.task_sent.sender_receivers_cache.clear()


def _run(task_type, identifier, as_node, node, server_id, steps):
    """Enqueue a task, claim and start it as ``node``, then apply ``steps(task_id, attempt)``."""
    task_id = tracker.enqueue_task(task_type, identifier)
    as_node(node)
    assert tracker.dequeue_task(server_id) == [task_id]
    attempt = tracker.begin_attempt(task_id, server_id=server_id).number
    steps(task_id, attempt)
    as_node(None)
    return TaskInstance.objects.get(pk=task_id)


def test_state_from_events_gives_celery_states_and_workers(task_type, as_node):
    name = task_type.identifier
    ok = _run(
        name, "ok", as_node, DAEMON_A, "0xA", lambda t, a: tracker.stop_task_success(t, attempt=a)
    )
    failed = _run(
        name,
        "failed",
        as_node,
        DAEMON_B,
        "0xB",
        lambda t, a: tracker.stop_task_failure(t, attempt=a, exception="ValueError: x"),
    )

    def retry_then_succeed(task_id, attempt):
        tracker.reenqueue_task(task_id, "retry", attempt=attempt, retry=True)
        tracker.dequeue_task("0xB")
        again = tracker.begin_attempt(task_id, server_id="0xB").number
        tracker.stop_task_success(task_id, attempt=again)

    retried = _run(name, "retried", as_node, DAEMON_A, "0xA", retry_then_succeed)

    def pause_resume_finish(task_id, attempt):
        tracker.pause_task(task_id, attempt=attempt)
        tracker.set_task_progress(task_id, 1, 2, attempt=attempt)
        tracker.resume_task(task_id, attempt=attempt)
        tracker.stop_task_success(task_id, attempt=attempt)

    resumed = _run(name, "resumed", as_node, DAEMON_B, "0xB", pause_resume_finish)
    paused = _run(
        name, "paused", as_node, DAEMON_A, "0xA", lambda t, a: tracker.pause_task(t, attempt=a)
    )

    def pause_then_terminate(task_id, attempt):
        tracker.pause_task(task_id, attempt=attempt)
        tracker.revoke_task(task_id, terminated=True, signum=15)

    paused_revoked = _run(name, "paused-revoked", as_node, DAEMON_B, "0xB", pause_then_terminate)
    # Last: a re-enqueued task is back in the queue, where the next claim would take it.
    restarted = _run(
        name, "restarted", as_node, DAEMON_A, "0xA", lambda t, a: tracker.restart_or_fail(t, "lost")
    )
    waiting = TaskInstance.objects.get(pk=tracker.enqueue_task(name, "waiting"))
    revoked = TaskInstance.objects.get(pk=tracker.enqueue_task(name, "revoked"))
    tracker.revoke_task(revoked.pk)

    state = events.state_from_events()
    expected = {
        ok: "SUCCESS",
        failed: "FAILURE",
        retried: "SUCCESS",
        restarted: "RETRY",
        resumed: "SUCCESS",
        paused: "PAUSED",
        paused_revoked: "REVOKED",
        waiting: "PENDING",
        revoked: "REVOKED",
    }
    got = {task: state.tasks[str(task.uuid)].state for task in expected}
    assert got == expected
    assert state.tasks[str(failed.uuid)].exception == "ValueError: x"
    assert state.tasks[str(ok.uuid)].worker.hostname == DAEMON_A
    assert state.tasks[str(retried.uuid)].retries == 1
    assert state.tasks[str(ok.uuid)].name == name
    # The daemons are workers; the enqueuing process is the tasks' client (it is a worker too
    # only where it revoked a task itself, as the revoke of the waiting task here).
    assert {DAEMON_A, DAEMON_B} <= set(state.workers)
    assert state.tasks[str(ok.uuid)].client == events.node_name()


def test_state_from_events_takes_a_time_range(task_type):
    first = tracker.enqueue_task(task_type.identifier, "first")
    cut = LogRecord.objects.get(instance_id=first).time
    second = tracker.enqueue_task(task_type.identifier, "second")
    LogRecord.objects.filter(instance_id=second).update(time=cut.replace(year=cut.year + 1))
    state = events.state_from_events(end=cut.replace(year=cut.year + 1))
    assert set(state.tasks) == {str(TaskInstance.objects.get(pk=first).uuid)}
