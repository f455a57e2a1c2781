"""The status graph: every (source, target) pair through the tracker function that makes it.

Allowed pairs (``atp.models.TRANSITIONS``) succeed and write exactly one LogRecord; every other
pair is refused and changes nothing. Then the fencing: a worker whose attempt is over gets
``StaleAttempt`` from every write instead of overwriting the task's current attempt.
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from atp import tracker
from atp.exceptions import InvalidInput, InvalidTransition, QueueEmpty, StaleAttempt
from atp.models import TERMINAL, TRANSITIONS, LogRecord, Response, Status, TaskInstance
from tests.support.factories import TaskInstanceFactory

pytestmark = pytest.mark.django_db

#: Target status → the tracker functions that move a task there, each called with the task id.
MOVERS = {
    Status.ACCEPTED: {"reenqueue_task": tracker.reenqueue_task},
    Status.SCHEDULED: {"dequeue_task": lambda task_id: tracker.dequeue_task("server-2")},
    Status.RUNNING: {"start_task": tracker.start_task, "resume_task": tracker.resume_task},
    Status.PAUSED: {"pause_task": tracker.pause_task},
    Status.FINISHED: {"stop_task_success": tracker.stop_task_success},
    Status.FAILED: {"stop_task_failure": tracker.stop_task_failure},
    Status.REVOKED: {"revoke_task": tracker.revoke_task},
    Status.WAITING: {"wait_for_subtasks": tracker.wait_for_subtasks},
}
#: The one mover of an allowed pair that has two (RUNNING is a start or a resume).
RUNNING_MOVER = {Status.SCHEDULED: "start_task", Status.PAUSED: "resume_task"}
#: The Celery event each allowed move logs.
EVENTS = {
    Status.ACCEPTED: "task-retried",
    Status.SCHEDULED: "task-received",
    Status.PAUSED: "task-paused",
    Status.FINISHED: "task-succeeded",
    Status.FAILED: "task-failed",
    Status.REVOKED: "task-revoked",
    Status.WAITING: "task-waiting",
}
RUNNING_EVENT = {Status.SCHEDULED: "task-started", Status.PAUSED: "task-resumed"}

PAIRS = [(source, target) for source in Status for target in MOVERS]
#: BLOCKED → ACCEPTED has no mover of its own: only the end of a task's last dependency
#: releases it (tests/unit/test_workflows.py); reenqueue_task refuses it.
RELEASED_BY_DEPENDENCIES = (Status.BLOCKED, Status.ACCEPTED)
ALLOWED = [
    pair for pair in PAIRS if pair[1] in TRANSITIONS[pair[0]] and pair != RELEASED_BY_DEPENDENCIES
]
REFUSED = [
    pair
    for pair in PAIRS
    if pair[1] not in TRANSITIONS[pair[0]] or pair == RELEASED_BY_DEPENDENCIES
]


def _pair_id(pair):
    return f"{pair[0].label}->{pair[1].label}"


def _snapshot(task_id):
    task = TaskInstance.objects.get(pk=task_id)
    return task.status, task.updated_at, task.server_id, task.attempts, task.log.count()


def test_the_graph_covers_every_status_and_ends_at_the_terminal_ones():
    assert set(TRANSITIONS) == set(Status)
    assert all(not TRANSITIONS[status] for status in TERMINAL)
    # Nothing moves a task back to UNDEFINED, so it needs no mover.
    assert all(Status.UNDEFINED not in targets for targets in TRANSITIONS.values())
    # BLOCKED is entered only at enqueue (a task with dependencies), never by a move.
    assert all(Status.BLOCKED not in targets for s, targets in TRANSITIONS.items() if s)
    assert set(MOVERS) == set(Status) - {Status.UNDEFINED, Status.BLOCKED}


@pytest.mark.parametrize("source, target", ALLOWED, ids=map(_pair_id, ALLOWED))
def test_allowed_transition_succeeds_and_logs_once(task_type, source, target):
    task = TaskInstanceFactory(type=task_type, status=source)
    name = RUNNING_MOVER[source] if target == Status.RUNNING else next(iter(MOVERS[target]))
    logs_before = task.log.count()

    MOVERS[target][name](task.pk)

    task.refresh_from_db()
    assert task.status == target
    assert task.log.count() == logs_before + 1
    record = task.log.latest("id")
    expected_event = RUNNING_EVENT[source] if target == Status.RUNNING else EVENTS[target]
    assert (record.status, record.event) == (target, expected_event)
    assert record.fields["uuid"] == str(task.uuid)
    assert record.time == task.updated_at
    if target in TERMINAL:
        assert task.finished_at == task.updated_at


@pytest.mark.parametrize("source, target", REFUSED, ids=map(_pair_id, REFUSED))
def test_refused_transition_raises_and_changes_nothing(task_type, source, target):
    task = TaskInstanceFactory(type=task_type, status=source)
    before = _snapshot(task.pk)

    for name, move in MOVERS[target].items():
        # dequeue_task takes no task id: a task it may not claim just is not in the queue.
        expected = QueueEmpty if name == "dequeue_task" else InvalidTransition
        with pytest.raises(expected):
            move(task.pk)
        assert _snapshot(task.pk) == before, name


@pytest.mark.parametrize(
    "source, mover",
    [(Status.PAUSED, tracker.start_task), (Status.SCHEDULED, tracker.resume_task)],
    ids=["start-from-PAUSED", "resume-from-SCHEDULED"],
)
def test_start_and_resume_each_have_one_source(task_type, source, mover):
    task = TaskInstanceFactory(type=task_type, status=source)
    before = _snapshot(task.pk)

    with pytest.raises(InvalidTransition, match=f"is {source.label}"):
        mover(task.pk)

    assert _snapshot(task.pk) == before


def test_invalid_transition_message_names_the_task_and_the_allowed_sources(task_type):
    task = TaskInstanceFactory(type=task_type, identifier="job-1", status=Status.FINISHED)
    with pytest.raises(InvalidTransition) as caught:
        tracker.pause_task(task.pk)
    message = str(caught.value)
    assert f"{task_type.identifier}::job-1" in message
    assert "FINISHED" in message and "PAUSED" in message and "RUNNING" in message


@pytest.mark.parametrize("status", sorted(TERMINAL), ids=lambda s: Status(s).label)
def test_terminal_status_never_changes(task_type, status):
    task = TaskInstanceFactory(type=task_type, status=status)
    before = _snapshot(task.pk)

    for target, movers in MOVERS.items():
        for name, move in movers.items():
            with pytest.raises(QueueEmpty if target == Status.SCHEDULED else InvalidTransition):
                move(task.pk)
            assert _snapshot(task.pk) == before, name
    assert tracker.stop_task_success_if_not_finished(task.pk) is False
    assert _snapshot(task.pk) == before


def test_start_counts_the_attempt_and_returns_the_input(task_type):
    task = TaskInstanceFactory(type=task_type, status=Status.SCHEDULED, input={"a": 1})

    assert tracker.start_task(task.pk) == {"a": 1}

    task.refresh_from_db()
    assert (task.status, task.attempts) == (Status.RUNNING, 1)
    assert task.started_at is not None and task.received_at <= task.started_at


def test_reenqueue_clears_the_claim_and_may_count_a_retry(task_type):
    task = TaskInstanceFactory(type=task_type, status=Status.RUNNING)

    tracker.reenqueue_task(task.pk, "try again", retry=True)

    task.refresh_from_db()
    assert (task.status, task.server_id, task.retries) == (Status.ACCEPTED, "", 1)
    assert task.log.latest("id").fields["exception"] == "try again"


# --- stop_task_success_if_not_finished --------------------------------------------------

IF_NOT_FINISHED = [(source, source in (Status.RUNNING, Status.PAUSED)) for source in Status]


@pytest.mark.parametrize(
    "source, finishes", IF_NOT_FINISHED, ids=[s.label for s, _ in IF_NOT_FINISHED]
)
def test_stop_success_if_not_finished_ends_only_running_or_paused_tasks(
    task_type, source, finishes
):
    task = TaskInstanceFactory(type=task_type, status=source)
    before = _snapshot(task.pk)

    assert tracker.stop_task_success_if_not_finished(task.pk, "done", result=3) is finishes

    if finishes:
        task.refresh_from_db()
        assert task.status == Status.FINISHED
        record = task.log.latest("id")
        assert (record.event, record.message, record.fields["result"]) == (
            "task-succeeded",
            "done",
            "3",
        )
        assert task.log.count() == before[-1] + 1
    else:
        # A task waiting for its subtasks, or already ended, keeps its status.
        assert _snapshot(task.pk) == before


# --- fencing ----------------------------------------------------------------------------


@pytest.fixture
def taken_over(running):
    """A task whose first attempt (server-1) was given up and restarted by server-2.

    Returns ``(task id, old attempt number, new attempt number)``.
    """
    task_id, old = running("job-1")
    tracker.reenqueue_task(task_id, "presumed lost")
    assert tracker.dequeue_task("server-2") == [task_id]
    new = tracker.begin_attempt(task_id, server_id="server-2").number
    assert (old, new) == (1, 2)
    return task_id, old, new


OLD_ATTEMPT_WRITES = {
    "stop_task_success": lambda task_id, n: tracker.stop_task_success(task_id, attempt=n),
    "stop_task_success_if_not_finished": lambda task_id, n: (
        tracker.stop_task_success_if_not_finished(task_id, attempt=n)
    ),
    "stop_task_failure": lambda task_id, n: tracker.stop_task_failure(task_id, attempt=n),
    "pause_task": lambda task_id, n: tracker.pause_task(task_id, attempt=n),
    "resume_task": lambda task_id, n: tracker.resume_task(task_id, attempt=n),
    "wait_for_subtasks": lambda task_id, n: tracker.wait_for_subtasks(task_id, attempt=n),
    "reenqueue_task": lambda task_id, n: tracker.reenqueue_task(task_id, attempt=n),
    "set_task_response": lambda task_id, n: tracker.set_task_response(task_id, b"old", attempt=n),
    "heartbeat": lambda task_id, n: tracker.heartbeat(task_id, attempt=n),
    "set_task_progress": lambda task_id, n: tracker.set_task_progress(task_id, 1, 2, attempt=n),
}


def _state(task_id):
    task = TaskInstance.objects.get(pk=task_id)
    response = Response.objects.filter(instance_id=task_id).values_list("data", flat=True)
    return (
        task.status,
        task.attempts,
        task.server_id,
        task.updated_at,
        task.progress,
        task.log.count(),
        [bytes(data) for data in response],
    )


@pytest.mark.parametrize("write", OLD_ATTEMPT_WRITES.values(), ids=OLD_ATTEMPT_WRITES.keys())
def test_old_attempt_cannot_write_while_the_new_one_runs(taken_over, write):
    task_id, old, new = taken_over
    before = _state(task_id)

    with pytest.raises(StaleAttempt, match=f"attempt {old} .* is over"):
        write(task_id, old)

    assert _state(task_id) == before


@pytest.mark.parametrize("write", OLD_ATTEMPT_WRITES.values(), ids=OLD_ATTEMPT_WRITES.keys())
def test_old_attempt_cannot_write_after_the_new_one_finished(taken_over, write):
    task_id, old, new = taken_over
    tracker.set_task_response(task_id, b"new", attempt=new)
    tracker.stop_task_success(task_id, attempt=new)
    before = _state(task_id)

    with pytest.raises(StaleAttempt):
        write(task_id, old)

    assert _state(task_id) == before
    assert tracker.get_task_response("test.noop", "job-1") == (b"new", "text/xml")


@pytest.mark.parametrize("write", OLD_ATTEMPT_WRITES.values(), ids=OLD_ATTEMPT_WRITES.keys())
def test_old_attempt_cannot_write_while_its_task_waits_in_the_queue(running, write):
    task_id, attempt = running("job-1")
    tracker.reenqueue_task(task_id, "presumed lost")
    before = _state(task_id)

    with pytest.raises(StaleAttempt):
        write(task_id, attempt)

    assert _state(task_id) == before


def test_current_attempt_writes(taken_over):
    task_id, old, new = taken_over

    tracker.heartbeat(task_id, attempt=new)
    tracker.set_task_progress(task_id, 1, 4, attempt=new)
    tracker.pause_task(task_id, attempt=new)
    tracker.resume_task(task_id, attempt=new)
    tracker.set_task_response(task_id, "done", "text/plain", attempt=new)
    tracker.stop_task_success(task_id, attempt=new)

    assert tracker.get_task_status(task_id).status == Status.FINISHED
    # After it ended itself, its own attempt learns that from InvalidTransition, not
    # StaleAttempt, and may still store its response.
    assert tracker.stop_task_success_if_not_finished(task_id, attempt=new) is False
    tracker.set_task_response(task_id, "final", "text/plain", attempt=new)
    assert tracker.get_task_response("test.noop", "job-1") == (b"final", "text/plain")


def test_start_by_a_daemon_that_lost_the_claim_is_stale(enqueue):
    task_id = enqueue("job-1")
    tracker.dequeue_task("server-1")
    tracker.reenqueue_task(task_id, "claim given back")
    tracker.dequeue_task("server-2")
    before = _snapshot(task_id)

    with pytest.raises(StaleAttempt, match="not claimed by daemon server-1.*server-2"):
        tracker.start_task(task_id, server_id="server-1")
    with pytest.raises(StaleAttempt):
        tracker.begin_attempt(task_id, server_id="server-1")

    assert _snapshot(task_id) == before
    assert tracker.start_task(task_id, server_id="server-2") is None


def test_start_of_a_claim_given_back_to_the_queue_is_stale(enqueue):
    task_id = enqueue("job-1")
    tracker.dequeue_task("server-1")
    tracker.reenqueue_task(task_id, "claim given back")

    with pytest.raises(StaleAttempt, match="claimed by nobody"):
        tracker.start_task(task_id, server_id="server-1")
    assert tracker.get_task_status(task_id).status == Status.ACCEPTED


def test_writes_without_a_token_are_not_fenced(taken_over):
    """Callers that act on the task itself (control, sweeps) pass no attempt."""
    task_id, _, _ = taken_over
    tracker.revoke_task(task_id, "cancelled by an operator")
    assert tracker.get_task_status(task_id).status == Status.REVOKED
    assert LogRecord.objects.filter(instance_id=task_id, event="task-revoked").count() == 1


# --- event fields of the setters, and the writes that are not transitions ---------------


def test_failure_and_revocation_record_their_event_fields(task_type):
    failed = TaskInstanceFactory(type=task_type, status=Status.RUNNING)
    revoked = TaskInstanceFactory(type=task_type, status=Status.RUNNING)

    tracker.stop_task_failure(failed.pk, "boom", exception="ValueError: x", traceback="tb")
    tracker.revoke_task(revoked.pk, "killed", terminated=True, signum=15)

    fields = failed.log.latest("id").fields
    assert (fields["exception"], fields["traceback"]) == ("ValueError: x", "tb")
    fields = revoked.log.latest("id").fields
    assert (fields["terminated"], fields["signum"], fields["expired"]) == (True, 15, False)


def test_reenqueue_with_run_after_delays_the_next_claim(task_type):
    task = TaskInstanceFactory(type=task_type, status=Status.RUNNING)
    later = timezone.now() + timedelta(hours=1)

    tracker.reenqueue_task(task.pk, "later", run_after=later)

    assert TaskInstance.objects.get(pk=task.pk).run_after == later
    with pytest.raises(QueueEmpty):
        tracker.dequeue_task("server-1")


@pytest.mark.parametrize("status", [s for s in Status if s not in (Status.RUNNING, Status.PAUSED)])
def test_progress_only_from_a_running_or_paused_task(task_type, status):
    task = TaskInstanceFactory(type=task_type, status=status)
    before = _snapshot(task.pk)

    with pytest.raises(InvalidTransition, match="only a RUNNING or PAUSED task reports progress"):
        tracker.set_task_progress(task.pk, 1, 2)

    assert _snapshot(task.pk) == before


@pytest.mark.parametrize(
    "done, total, match",
    [(-1, 2, "done must be at least 0"), ("1", 2, "done must be a finite"), (1, -2, "total")],
)
def test_bad_progress_is_refused(task_type, done, total, match):
    task = TaskInstanceFactory(type=task_type, status=Status.RUNNING)
    before = _snapshot(task.pk)

    with pytest.raises(InvalidInput, match=match):
        tracker.set_task_progress(task.pk, done, total)

    assert _snapshot(task.pk) == before


def test_progress_keeps_the_status_and_logs_one_record(task_type):
    task = TaskInstanceFactory(type=task_type, status=Status.PAUSED)

    progress = tracker.set_task_progress(task.pk, 5, message="five so far")

    assert progress == {"done": 5.0, "total": None, "percent": None, "message": "five so far"}
    task.refresh_from_db()
    assert (task.status, task.progress) == (Status.PAUSED, progress)
    record = task.log.get()
    assert (record.status, record.event, record.fields["progress"]) == (
        Status.PAUSED,
        "task-progress",
        progress,
    )


@pytest.mark.parametrize("status", sorted(TERMINAL), ids=lambda s: Status(s).label)
def test_heartbeat_of_an_ended_task_is_refused(task_type, status):
    task = TaskInstanceFactory(type=task_type, status=status)
    before = _snapshot(task.pk)

    with pytest.raises(InvalidTransition, match="has ended"):
        tracker.heartbeat(task.pk)

    assert _snapshot(task.pk) == before


def test_heartbeat_moves_updated_at_and_logs_nothing(task_type):
    task = TaskInstanceFactory(type=task_type, status=Status.RUNNING)
    TaskInstance.objects.filter(pk=task.pk).update(updated_at=task.updated_at.replace(year=2000))

    tracker.heartbeat(task.pk)

    task.refresh_from_db()
    assert task.updated_at.year > 2000
    assert task.status == Status.RUNNING and not task.log.exists()
