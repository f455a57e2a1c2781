"""Flow control in the admin: why a task waits (page and filter), pausing, the dashboard."""

from datetime import timedelta

import pytest
from django.utils import timezone

from atp import control, tracker
from atp.models import QueuePause, TaskType
from atp.query import waiting
from tests.support.admin_fixtures import ADMIN, DASHBOARD, TASKS, messages_of

pytestmark = pytest.mark.django_db

PAUSES = ADMIN + "queuepause/"
TYPES = ADMIN + "tasktype/"


@pytest.fixture
def held_back(task_type):
    """One waiting task per reason, plus one that nothing holds back."""
    limited = tracker.register_task_type(
        "test.limited", "tests.support.handlers.noop", concurrency_limit=1
    )
    rated = tracker.register_task_type(
        "test.rated", "tests.support.handlers.noop", rate_limit="1/h"
    )
    paused = tracker.register_task_type("test.paused", "tests.support.handlers.noop")
    ids = {
        "later": tracker.enqueue_task(task_type.identifier, "later", countdown=3600),
        "queue": tracker.enqueue_task(task_type.identifier, "queue", queue="mail"),
        "type": tracker.enqueue_task(paused.identifier, "type"),
    }
    tracker.enqueue_tasks(
        limited.identifier, [("running", None), ("concurrency", None)], concurrency_key="k"
    )
    tracker.enqueue_tasks(rated.identifier, [("claimed", None), ("rate", None)])
    control.pause_queue("mail")
    control.pause_task_type(paused.identifier)
    claimed = tracker.claim_tasks("s1", limit=10)  # the first of each limited type
    assert sorted(attempt.identifier for attempt in claimed) == ["claimed", "running"]
    ids["concurrency"] = tracker.TaskInstance.objects.get(identifier="concurrency").pk
    ids["rate"] = tracker.TaskInstance.objects.get(identifier="rate").pk
    ids["free"] = tracker.enqueue_task(task_type.identifier, "free")
    ids["dependencies"] = tracker.enqueue_task(
        task_type.identifier, "after", depends_on=[ids["later"]]
    )
    return ids


def test_each_reason_is_named_and_filters_exactly_its_tasks(held_back):
    for reason, _ in waiting.REASONS:
        found = waiting.filter_tasks(tracker.TaskInstance.objects.all(), reason)
        assert list(found.values_list("pk", flat=True)) == [held_back[reason]], reason
    words = {
        reason: waiting.reasons(tracker.TaskInstance.objects.get(pk=task_id))
        for reason, task_id in held_back.items()
    }
    assert words["later"][0].startswith("due later, at ")
    assert words["queue"] == ["queue 'mail' is paused"]
    assert words["type"] == ["task type 'test.paused' is paused"]
    assert words["concurrency"] == ["concurrency key 'k' is full: 1 of 1 places taken"]
    assert words["rate"] == ["rate limit 1/h is used up"]
    assert words["free"] == []
    assert words["dependencies"] == ["waiting for 1 task(s) it depends on to end"]


def test_the_task_page_and_the_list_filter_show_why(superuser_client, held_back):
    page = superuser_client.get(f"{TASKS}{held_back['queue']}/change/").content.decode()
    assert "waiting because" in page.lower()
    assert "queue &#x27;mail&#x27; is paused" in page
    free = superuser_client.get(f"{TASKS}{held_back['free']}/change/").content.decode()
    assert "nothing: it is next in line" in free
    listed = superuser_client.get(TASKS, {"waiting": "concurrency"})
    assert [task.pk for task in listed.context["cl"].result_list] == [held_back["concurrency"]]


def test_queues_are_paused_and_resumed_in_the_admin(superuser_client, task_type):
    reply = superuser_client.post(PAUSES + "add/", {"queue": "reports"}, follow=True)
    assert reply.status_code == 200
    pause = QueuePause.objects.get(queue="reports")
    assert superuser_client.post(PAUSES + "add/", {"queue": ""}).status_code == 200  # form error
    assert QueuePause.objects.count() == 1
    reply = superuser_client.post(
        PAUSES, {"action": "resume_queues", "_selected_action": [pause.pk]}, follow=True
    )
    assert "Resumed 1 queue(s): reports." in messages_of(reply)
    assert not QueuePause.objects.exists()


def test_viewers_may_not_pause(viewer_client, task_type):
    assert viewer_client.get(PAUSES).status_code == 200
    assert viewer_client.post(PAUSES + "add/", {"queue": "reports"}).status_code == 403
    assert not QueuePause.objects.exists()


def test_task_types_are_paused_and_resumed_by_actions(superuser_client, task_type):
    data = {"action": "pause_types", "_selected_action": [task_type.pk]}
    reply = superuser_client.post(TYPES, data, follow=True)
    assert f"Paused 1 task type(s): {task_type.identifier}." in messages_of(reply)
    assert TaskType.objects.get(pk=task_type.pk).paused
    reply = superuser_client.post(TYPES, {**data, "action": "resume_types"}, follow=True)
    assert not TaskType.objects.get(pk=task_type.pk).paused
    listed = superuser_client.get(TYPES).content.decode()
    assert "flow" in listed


def test_the_type_form_checks_the_concurrency_limit(superuser_client, task_type):
    page = superuser_client.get(f"{TYPES}{task_type.pk}/change/")
    form = page.context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None}
    data.update(options="{}", concurrency_limit="0")
    reply = superuser_client.post(f"{TYPES}{task_type.pk}/change/", data)
    assert "concurrency_limit must be at least 1" in reply.content.decode()
    data["concurrency_limit"] = "3"
    superuser_client.post(f"{TYPES}{task_type.pk}/change/", data)
    assert TaskType.objects.get(pk=task_type.pk).concurrency_limit == 3


def test_the_dashboard_lists_what_is_paused(superuser_client, task_type):
    control.pause_queue("mail")
    control.pause_task_type(task_type.identifier)
    page = superuser_client.get(DASHBOARD).content.decode()
    assert "queue mail" in page
    assert f"type {task_type.identifier}" in page
    assert timezone.now() - timedelta(seconds=1) < QueuePause.objects.get().paused_at
