"""GET atp/metrics: parsed with prometheus_client's own parser, every value against the DB."""

from collections import Counter
from datetime import timedelta

import pytest
from django.db.models import Count
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from atp.models import TERMINAL, Status, TaskInstance
from atp.query.ended import LAG
from atp.query.metrics import RUNTIME_BUCKETS
from atp.query.states import CELERY_STATE
from tests.support.factories import TaskInstanceFactory, TaskTypeFactory, WorkerFactory

URL = reverse("atp:metrics")


@pytest.fixture
def history(db):
    """Tasks of two types in every state, some due and some not, with run times; daemons."""
    now = timezone.now()
    mail = TaskTypeFactory(identifier="mail", queue="mail")
    resize = TaskTypeFactory(identifier="resize")
    for status in Status:
        TaskInstanceFactory.create_batch(2, type=mail, status=status)
        TaskInstanceFactory(type=resize, status=status)
    # Ended long enough ago to be counted (atp.query.ended.LAG); the recent ends below are not.
    TaskInstance.objects.filter(status__in=TERMINAL).update(finished_at=now - timedelta(minutes=10))
    # Waiting: three due in "mail" (one due for 90 s), one scheduled for later.
    TaskInstanceFactory(type=mail, status=Status.ACCEPTED, run_after=now - timedelta(seconds=90))
    TaskInstanceFactory(type=mail, status=Status.ACCEPTED, run_after=now + timedelta(hours=2))
    # Recent ends with known run times: 0.02 s, 0.3 s, 4 s of "resize".
    for seconds in (0.02, 0.3, 4):
        TaskInstanceFactory(
            type=resize,
            status=Status.FINISHED,
            started_at=now - timedelta(seconds=seconds),
            finished_at=now,
        )
    WorkerFactory.create_batch(2)
    WorkerFactory(heartbeat_at=now - timedelta(hours=1))  # lost
    return now


def scrape(client, **headers) -> dict:
    reply = client.get(URL, **headers)
    assert reply.status_code == 200, reply.content
    assert reply["Content-Type"].startswith("text/plain; version=0.0.4")
    return {family.name: family for family in text_string_to_metric_families(reply.text)}


def samples(family, suffix="") -> dict:
    return {
        tuple(sorted(s.labels.items())): s.value
        for s in family.samples
        if s.name == family.name + suffix
    }


def counted(tasks) -> dict:
    """Samples ``{labels: n}`` of ``tasks`` counted by type and state."""
    by_type_status = tasks.values_list("type__identifier", "status").annotate(n=Count("pk"))
    return {
        (("state", CELERY_STATE[Status(s)]), ("type", t)): float(n) for t, s, n in by_type_status
    }


def test_every_value_matches_the_database(history, viewer_client):
    families = scrape(viewer_client)
    live = TaskInstance.objects.exclude(status__in=TERMINAL)
    assert samples(families["atp_tasks"]) == counted(live)
    counted_ends = TaskInstance.objects.filter(status__in=TERMINAL, finished_at__lte=history - LAG)
    assert samples(families["atp_tasks_ended"], "_total") == counted(counted_ends)
    assert TaskInstance.objects.filter(status__in=TERMINAL).count() == counted_ends.count() + 3

    now = timezone.now()
    due = TaskInstance.objects.filter(status=Status.ACCEPTED, run_after__lte=now)
    per_queue = Counter(due.values_list("queue", flat=True))
    assert samples(families["atp_queue_waiting"]) == {
        (("queue", q),): float(n) for q, n in per_queue.items()
    }
    oldest = samples(families["atp_queue_oldest_due_seconds"])
    assert 90 <= oldest[(("queue", "mail"),)] < 100
    assert 0 <= oldest[(("queue", "default"),)] < 60

    runtime = families["atp_task_runtime_seconds"]
    recent = TaskInstance.objects.filter(
        type__identifier="resize",
        status__in=TERMINAL,
        started_at__isnull=False,
        finished_at__gte=now - timedelta(seconds=300),
    )
    runtimes = [(t.finished_at - t.started_at).total_seconds() for t in recent]
    buckets = {
        s.labels["le"]: s.value
        for s in runtime.samples
        if s.name == "atp_task_runtime_seconds_bucket" and s.labels["type"] == "resize"
    }
    for bound in RUNTIME_BUCKETS:
        assert buckets[str(float(bound))] == sum(1 for r in runtimes if r <= bound), bound
    assert buckets["+Inf"] == len(runtimes) >= 3
    assert samples(families["atp_workers_alive"]) == {(): 2.0}


def test_an_empty_database_gives_zero_workers_and_no_queue_samples(db, viewer_client):
    families = scrape(viewer_client)
    assert samples(families["atp_workers_alive"]) == {(): 0.0}
    assert samples(families["atp_queue_waiting"]) == {}
    assert samples(families["atp_queue_oldest_due_seconds"]) == {}


def test_only_viewers_or_the_bearer_token_may_read(db, client, viewer_client):
    assert client.get(URL).status_code == 401
    assert viewer_client.get(URL).status_code == 200
    assert client.get(URL, HTTP_AUTHORIZATION="Bearer s3cret").status_code == 401  # none set
    with override_settings(ATP={"METRICS_TOKEN": "s3cret"}):
        assert scrape(client, HTTP_AUTHORIZATION="Bearer s3cret")["atp_workers_alive"]
        assert client.get(URL, HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
        assert client.post(URL, HTTP_AUTHORIZATION="Bearer s3cret").status_code == 405


def test_a_user_without_the_view_permission_is_refused(db, client, django_user_model):
    django_user_model.objects.create_user("nobody", password="pw", is_staff=True)
    client.login(username="nobody", password="pw")
    reply = client.get(URL)
    assert reply.status_code == 403 and reply.json()["error"]
