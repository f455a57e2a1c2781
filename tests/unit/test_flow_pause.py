"""Pausing queues and task types: stored in the database, obeyed by every claim."""

import json
import select

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from atp import control, tracker
from atp.daemon import Daemon, WorkerOptions
from atp.daemon.remote import NodeState, active_queues
from atp.daemon.wakeup import Listener
from atp.exceptions import InvalidInput
from atp.models import QueuePause, Status, TaskInstance, TaskType
from tests.support.helpers import nothing_written

pytestmark = pytest.mark.django_db


def _claimed_queues(server_id="s1"):
    attempts = tracker.claim_tasks(server_id, limit=50)
    return sorted(TaskInstance.objects.get(pk=a.task_id).queue for a in attempts)


def test_a_queue_paused_before_its_first_task_is_not_claimed_until_resumed(task_type):
    assert control.pause_queue("mail") is True
    assert control.pause_queue("mail") is False  # already paused
    tracker.enqueue_tasks(task_type.identifier, [(None, 1), (None, 2)], queue="mail")
    tracker.enqueue_tasks(task_type.identifier, [(None, 3)], queue="other")
    assert _claimed_queues() == ["other"]
    with pytest.raises(tracker.QueueEmpty):
        tracker.dequeue_task("s1")  # the ORM path obeys it too
    assert set(TaskInstance.objects.filter(queue="mail").values_list("status", flat=True)) == {
        Status.ACCEPTED
    }
    assert control.resume_queue("mail") is True
    assert control.resume_queue("mail") is False
    assert _claimed_queues() == ["mail", "mail"]


def test_a_paused_type_is_not_claimed_and_running_tasks_finish(task_type):
    other = tracker.register_task_type("test.other", "tests.support.handlers.noop")
    running = tracker.enqueue_task(task_type.identifier)
    (attempt,) = tracker.claim_tasks("s1", limit=1)
    tracker.enqueue_task(task_type.identifier)
    tracker.enqueue_task(other.identifier)
    assert control.pause_task_type(task_type.identifier) is True
    assert TaskType.objects.get(pk=task_type.pk).paused
    (claimed,) = tracker.claim_tasks("s1", limit=10)
    assert claimed.type == other.identifier
    tracker.stop_task_success(running, attempt=attempt.number)  # a running one finishes
    assert control.resume_task_type(task_type.identifier) is True
    assert [a.type for a in tracker.claim_tasks("s1", limit=10)] == [task_type.identifier]


@pytest.mark.parametrize(
    ("call", "name", "named"),
    [
        (control.pause_queue, "", "queue must not be empty"),
        (control.pause_queue, "q" * 65, "queue 'qqqq"),
        (control.resume_queue, None, "queue must be a string"),
        (control.pause_task_type, "no.such.type", "unknown task type 'no.such.type'"),
        (control.resume_task_type, "no.such.type", "unknown task type 'no.such.type'"),
        (control.pause_task_type, "", "task type must not be empty"),
    ],
)
def test_bad_names_are_refused_and_nothing_is_written(db, call, name, named):
    with nothing_written(), pytest.raises(InvalidInput, match=named):
        call(name)
    assert not QueuePause.objects.exists()


def test_inspect_active_queues_leaves_out_a_paused_queue(task_type):
    tracker.register_task_type("test.mail", "tests.support.handlers.noop", queue="mail")
    state = NodeState(app=None, hostname="atpd@host", server_id="s1")
    assert [q["name"] for q in active_queues(state)] == ["default", "mail"]
    control.pause_queue("mail")
    assert [q["name"] for q in active_queues(state)] == ["default"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_resuming_wakes_listening_daemons_at_once(task_type):
    control.pause_queue("mail")
    listener = Listener()
    listener.connect()
    try:
        assert select.select(listener.handles(), [], [], 5)[0]  # its own test notification
        assert not listener.drain() and listener.probe_deadline is None  # heard; wakes nothing
        # The claim reads a type's pause itself; daemons are told so that one holding
        # prefetched tasks of the type gives them back at once.
        control.pause_task_type(task_type.identifier)
        assert select.select(listener.handles(), [], [], 5)[0]
        assert listener.drain() and listener.pauses_changed
        listener.pauses_changed = False
        control.pause_queue("reports")  # daemons keep the paused queues: they are told
        assert select.select(listener.handles(), [], [], 5)[0]
        assert listener.drain() and listener.pauses_changed
        listener.pauses_changed = False
        control.resume_queue("mail")
        assert select.select(listener.handles(), [], [], 5)[0]
        assert listener.drain() and listener.pauses_changed
        control.resume_task_type(task_type.identifier)
        assert select.select(listener.handles(), [], [], 5)[0]
    finally:
        listener.close()


# --- over HTTP ------------------------------------------------------------------------------


def _client(*codenames) -> Client:
    user = User.objects.create_user("ops", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def test_the_http_routes_pause_and_resume(task_type):
    client = _client("change_tasktype")
    reply = client.post("/atp/api/queue/pause/mail")
    assert reply.status_code == 200
    assert reply.json() == {"message": "queue 'mail' paused", "paused": True, "changed": True}
    assert QueuePause.objects.filter(queue="mail").exists()
    assert client.post("/atp/api/queue/pause/mail").json()["changed"] is False
    assert client.post("/atp/api/queue/resume/mail").json()["paused"] is False
    assert not QueuePause.objects.exists()
    reply = client.post(f"/atp/api/task-type/pause/{task_type.identifier}")
    assert reply.json()["message"] == f"task type '{task_type.identifier}' paused"
    assert TaskType.objects.get(pk=task_type.pk).paused
    client.post(f"/atp/api/task-type/resume/{task_type.identifier}")
    assert not TaskType.objects.get(pk=task_type.pk).paused


def test_the_http_routes_need_the_change_tasktype_permission(task_type):
    reader = _client("view_tasktype", "change_taskinstance")
    for route in ("queue/pause/mail", f"task-type/pause/{task_type.identifier}"):
        assert reader.post(f"/atp/api/{route}").status_code == 403
        assert Client().post(f"/atp/api/{route}").status_code == 401
    assert not QueuePause.objects.exists()
    assert not TaskType.objects.get(pk=task_type.pk).paused


def test_the_http_routes_refuse_bad_names(task_type):
    client = _client("change_tasktype")
    reply = client.post("/atp/api/task-type/pause/no.such.type")
    assert reply.status_code == 400
    assert "unknown task type 'no.such.type'" in json.loads(reply.content)["error"]
    assert client.post(f"/atp/api/queue/pause/{'q' * 65}").status_code == 400
    assert client.get("/atp/api/queue/pause/mail").status_code == 405
    assert not QueuePause.objects.exists()


def test_a_daemon_reads_the_paused_queues_again_when_told_or_after_a_poll(task_type):
    daemon = Daemon(WorkerOptions(concurrency=1, poll_interval=60))
    assert daemon._paused_queues() == []
    control.pause_queue("mail")
    assert daemon._paused_queues() == []  # kept until told or until the next poll
    daemon.listener.pauses_changed = True  # what the NOTIFY of the pause sets
    assert daemon._paused_queues() == ["mail"]
    control.resume_queue("mail")
    daemon.paused_read_at -= 61  # a poll interval later
    assert daemon._paused_queues() == []


def test_an_unstarted_attempt_given_back_is_as_before_its_claim(task_type):
    """What a daemon does with prefetched tasks of a queue paused after their claim."""
    task_id = tracker.enqueue_task(task_type.identifier, queue="mail")
    before = TaskInstance.objects.get(pk=task_id)
    (attempt,) = tracker.claim_tasks("s1", limit=1)
    control.pause_queue("mail")
    with nothing_written(), pytest.raises(tracker.StaleAttempt):
        tracker.give_back_unstarted(task_id, attempt.number + 1, "paused")
    tracker.give_back_unstarted(task_id, attempt.number, "its queue was paused")
    task = TaskInstance.objects.get(pk=task_id)
    assert (task.status, task.attempts, task.server_id) == (Status.ACCEPTED, 0, "")
    assert task.run_after == before.run_after  # its place in the queue is kept
    last = list(task.log.order_by("id").values_list("event", "message", "fields__reason"))[-2:]
    assert last[0][0] == "task-retried" and "its queue was paused" in last[0][1]
    assert last[1] == ("task-pending", "Waiting: queue 'mail' is paused.", "queue")
    control.resume_queue("mail")
    (again,) = tracker.claim_tasks("s1", limit=1)
    assert (again.task_id, again.number) == (task_id, 1)  # no attempt was used
