"""The models' QuerySet methods, properties and string forms."""

from datetime import timedelta

import pytest
from django.utils import timezone

from atp.models import (
    ACTIVE,
    TERMINAL,
    Status,
    TaskInstance,
    TaskType,
    Worker,
    sources_of,
)
from tests.support.factories import (
    LogRecordFactory,
    ResponseFactory,
    TaskInstanceFactory,
    TaskTypeFactory,
    WorkerFactory,
)
from tests.support.helpers import age, ago

pytestmark = pytest.mark.django_db


@pytest.fixture
def one_of_each(db):
    """One task in every status (all of one type); returns ``{status: task}``."""
    task_type = TaskTypeFactory(identifier="kind")
    return {status: TaskInstanceFactory(type=task_type, status=status) for status in Status}


def _pks(queryset) -> set[int]:
    return set(queryset.values_list("pk", flat=True))


def _of(tasks, statuses) -> set[int]:
    return {tasks[status].pk for status in statuses}


# --- TaskInstance queries by status -----------------------------------------------------


def test_waiting_active_and_terminal_select_by_status(one_of_each):
    objects = TaskInstance.objects
    assert _pks(objects.waiting()) == _of(one_of_each, [Status.ACCEPTED])
    assert _pks(objects.active()) == _of(one_of_each, ACTIVE)
    assert _pks(objects.terminal()) == _of(one_of_each, TERMINAL)
    assert ACTIVE == {Status.SCHEDULED, Status.RUNNING, Status.PAUSED}
    assert TERMINAL == {Status.FINISHED, Status.FAILED, Status.REVOKED}


def test_waiting_includes_tasks_not_yet_due(db):
    later = TaskInstanceFactory(run_after=timezone.now() + timedelta(hours=1))
    assert _pks(TaskInstance.objects.waiting()) == {later.pk}
    assert not TaskInstance.objects.ready().exists()


def test_ready_is_due_waiting_tasks_in_claim_order(one_of_each):
    kind = one_of_each[Status.ACCEPTED].type
    now = timezone.now()
    high = TaskInstanceFactory(type=kind, priority=9, run_after=now)
    early = TaskInstanceFactory(type=kind, run_after=now - timedelta(minutes=1))
    same_time = [TaskInstanceFactory(type=kind, run_after=now) for _ in range(2)]
    TaskInstanceFactory(type=kind, priority=99, run_after=now + timedelta(seconds=30))
    accepted = one_of_each[Status.ACCEPTED]

    ready = list(TaskInstance.objects.ready(now + timedelta(seconds=1)))

    assert ready[0] == high
    assert ready[1] == early
    assert ready[1:] == sorted(ready[1:], key=lambda task: (task.run_after, task.pk))
    assert set(ready) == {high, early, *same_time, accepted}
    # A moment in the future makes the delayed task due as well.
    assert len(TaskInstance.objects.ready(now + timedelta(minutes=1))) == 6


def test_claimed_by_is_the_active_tasks_of_one_daemon(db):
    mine = [TaskInstanceFactory(status=status, server_id="0xAB") for status in sorted(ACTIVE)]
    TaskInstanceFactory(status=Status.FINISHED, server_id="0xAB")  # ended: no longer owned
    TaskInstanceFactory(status=Status.RUNNING, server_id="0xCD")

    assert _pks(TaskInstance.objects.claimed_by("0xAB")) == {task.pk for task in mine}
    assert not TaskInstance.objects.claimed_by("0xEF").exists()


def test_claimed_by_accepts_a_non_string_server_id(db):
    task = TaskInstanceFactory(status=Status.RUNNING, server_id="42")
    assert list(TaskInstance.objects.claimed_by(42)) == [task]


def test_stale_uses_each_types_timeout(db):
    short = TaskTypeFactory(identifier="short", timeout=60)
    long = TaskTypeFactory(identifier="long", timeout=600)
    stale = [TaskInstanceFactory(type=short, status=status) for status in sorted(ACTIVE)]
    patient = TaskInstanceFactory(type=long, status=Status.RUNNING)
    waiting = TaskInstanceFactory(type=short, status=Status.ACCEPTED)
    ended = TaskInstanceFactory(type=short, status=Status.FAILED)
    age(TaskInstance.objects.all(), 120)
    fresh = TaskInstanceFactory(type=short, status=Status.RUNNING)

    assert _pks(TaskInstance.objects.stale()) == {task.pk for task in stale}
    later = timezone.now() + timedelta(seconds=600)
    assert _pks(TaskInstance.objects.stale(later)) == {
        *(task.pk for task in stale),
        patient.pk,
        fresh.pk,
    }
    assert waiting.pk not in _pks(TaskInstance.objects.stale(later))
    assert ended.pk not in _pks(TaskInstance.objects.stale(later))


def test_stale_without_types_is_empty(db):
    assert list(TaskInstance.objects.stale()) == []


def test_unstarted_is_old_scheduled_tasks(db):
    old = TaskInstanceFactory(status=Status.SCHEDULED)
    running = TaskInstanceFactory(status=Status.RUNNING)
    age(TaskInstance.objects.all(), 61)
    young = TaskInstanceFactory(status=Status.SCHEDULED)

    assert _pks(TaskInstance.objects.unstarted()) == {old.pk}
    assert _pks(TaskInstance.objects.unstarted(claim_timeout=120)) == set()
    later = timezone.now() + timedelta(seconds=61)
    assert _pks(TaskInstance.objects.unstarted(later)) == {old.pk, young.pk}
    assert running.pk not in _pks(TaskInstance.objects.unstarted(later))


def test_retired_is_ended_tasks_past_their_types_retention(db):
    brief = TaskTypeFactory(identifier="brief", timeret=60)
    forever = TaskTypeFactory(identifier="forever", timeret=-1)
    retired = [TaskInstanceFactory(type=brief, status=status) for status in sorted(TERMINAL)]
    kept = TaskInstanceFactory(type=forever, status=Status.FINISHED)
    running = TaskInstanceFactory(type=brief, status=Status.RUNNING)
    age(TaskInstance.objects.all(), 61, "finished_at")
    young = TaskInstanceFactory(type=brief, status=Status.FINISHED)

    assert _pks(TaskInstance.objects.retired()) == {task.pk for task in retired}
    later = timezone.now() + timedelta(seconds=61)
    assert young.pk in _pks(TaskInstance.objects.retired(later))
    assert kept.pk not in _pks(TaskInstance.objects.retired(later))
    assert running.pk not in _pks(TaskInstance.objects.retired(later))


# --- TaskType ---------------------------------------------------------------------------


def test_task_type_queries_and_maxstart(db):
    brief = TaskTypeFactory(identifier="brief", timeret=60, maxrestart=0)
    limited = TaskTypeFactory(identifier="limited", max_queue_size=5)

    assert list(TaskType.objects.with_retention()) == [brief]
    assert list(TaskType.objects.sharing_global_queue()) == [brief]
    assert (brief.maxstart, limited.maxstart) == (1, 3)
    assert str(brief) == "brief"


def test_task_type_ordering_is_by_identifier(db):
    for identifier in ("b", "c", "a"):
        TaskTypeFactory(identifier=identifier)
    assert [str(t) for t in TaskType.objects.all()] == ["a", "b", "c"]


# --- statuses ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", list(Status), ids=lambda s: s.label)
def test_status_name_and_is_terminal(db, status):
    task = TaskInstanceFactory(status=status)
    assert task.status_name == status.label == status.name
    assert task.is_terminal is (status in TERMINAL)


def test_status_codes_are_the_contracts():
    assert {status.label: status.value for status in Status} == {
        "UNDEFINED": 0,
        "ACCEPTED": 1,
        "SCHEDULED": 2,
        "RUNNING": 3,
        "PAUSED": 4,
        "FINISHED": 5,
        "FAILED": 6,
        "REVOKED": 7,
        "WAITING": 8,
        "BLOCKED": 9,  # workflows (issue 20): waits for the tasks it depends on
    }


def test_sources_of():
    assert sources_of(Status.RUNNING) == {Status.SCHEDULED, Status.PAUSED}
    assert sources_of(Status.WAITING) == {Status.RUNNING}
    assert sources_of(Status.UNDEFINED) == frozenset()
    assert Status.ACCEPTED in sources_of(Status.REVOKED)
    assert not any(status in sources_of(Status.ACCEPTED) for status in TERMINAL)


# --- string forms -----------------------------------------------------------------------


def test_string_forms(db):
    kind = TaskTypeFactory(identifier="kind")
    task = TaskInstanceFactory(type=kind, identifier="job-1", status=Status.RUNNING)
    response = ResponseFactory(instance=task, data=b"12345", mime_type="text/plain")
    record = LogRecordFactory(instance=task, event="task-started")
    bare = LogRecordFactory(instance=task, event="")
    worker = WorkerFactory(hostname="host-a", server_id="0x01")

    assert str(task) == "kind::job-1"
    assert str(response) == f"{task.pk}: text/plain, 5 bytes"
    assert str(record).startswith(f"{task.pk} {record.time:%Y-%m-%d %H:%M:%S}")
    assert str(record).endswith("task-started")
    assert str(bare).endswith(f" {Status.RUNNING}")
    assert str(worker) == "host-a (0x01)"


def test_response_text_decodes_utf8_and_replaces_bad_bytes(db):
    good = ResponseFactory(data="grüße".encode())
    bad = ResponseFactory(data=b"ok\xff")
    good.refresh_from_db()
    bad.refresh_from_db()
    assert (good.text, bad.text) == ("grüße", "ok\ufffd")


# --- Worker -----------------------------------------------------------------------------


def test_workers_alive_lost_and_running(db):
    alive = WorkerFactory()
    lost = WorkerFactory(heartbeat_at=ago(60))
    stopped = WorkerFactory(heartbeat_at=ago(60), stopped_at=timezone.now())
    cutoff = ago(10)

    assert set(Worker.objects.running()) == {alive, lost}
    assert list(Worker.objects.alive(cutoff)) == [alive]
    assert list(Worker.objects.lost(cutoff)) == [lost]
    assert stopped not in Worker.objects.lost(cutoff)
