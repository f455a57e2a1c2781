"""The dashboard page and the cheap counts behind it and behind the task list."""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from atp import tracker
from atp.admin import stats
from atp.admin.paginator import estimated_count
from atp.models import Status, TaskInstance
from tests.support.admin_fixtures import DASHBOARD
from tests.support.factories import TaskInstanceFactory, TaskTypeFactory, WorkerFactory

pytestmark = pytest.mark.django_db


def test_dashboard_shows_counts_queue_oldest_chart_and_live_daemons(viewer_client, task_type):
    now = timezone.now()
    old = TaskInstanceFactory(
        type=task_type, identifier="oldest", enqueued_at=now - timedelta(hours=2)
    )
    TaskInstanceFactory(type=task_type, identifier="newer")
    for minutes in (5, 10):
        TaskInstanceFactory(
            type=task_type, status=Status.FINISHED, finished_at=now - timedelta(minutes=minutes)
        )
    TaskInstanceFactory(
        type=task_type, status=Status.FAILED, finished_at=now - timedelta(minutes=3)
    )
    TaskInstanceFactory(type=task_type, status=Status.FAILED, finished_at=now - timedelta(hours=3))
    WorkerFactory(server_id="live-daemon")
    WorkerFactory(server_id="lost-daemon", heartbeat_at=now - timedelta(hours=1))
    page = viewer_client.get(DASHBOARD).content.decode()
    assert 'data-status="ACCEPTED">2<' in page and 'data-status="FAILED">2<' in page
    assert '<strong data-live="depth">2</strong> waiting' in page and "of 64" in page
    assert f"/admin/atp/taskinstance/{old.pk}/change/" in page.split('id="atp-oldest"')[1][:400]
    # Last hour: 3 ended (the 3-hour-old failure is outside the window), 1 failed.
    assert '<span data-live="ended">3</span> task(s) ended' in page
    assert '<span data-live="failed">1</span> failed' in page and "33.3 %" in page
    assert '<svg class="atp-chart"' in page and "atp-failure-rate" in page
    charts = re.findall(r'<svg class="atp-chart".*?</svg>', page, re.S)
    assert len(charts) == 3  # throughput, queues, run times
    assert page.count("<rect") >= 3 and not any("<script" in chart for chart in charts)
    # The live table lists the daemon that beats; the lost one is under "Recently lost daemons".
    live, lost = page.split('data-live-html="workers"')[1].split("Recently lost daemons")
    assert "live-daemon" in live and "lost-daemon" not in live
    assert "lost-daemon" in lost and "live-daemon" not in lost


def test_throughput_buckets_by_minute_and_status(task_type):
    now = timezone.now()
    TaskInstanceFactory(type=task_type, status=Status.FINISHED, finished_at=now)
    TaskInstanceFactory(type=task_type, status=Status.REVOKED, finished_at=now)
    TaskInstanceFactory(
        type=task_type, status=Status.FAILED, finished_at=now - timedelta(minutes=30)
    )
    buckets = stats.throughput(now)
    assert len(buckets) == 60
    assert (buckets[-1].finished, buckets[-1].revoked) == (1, 1)
    assert sum(bucket.failed for bucket in buckets) == 1


def test_counts_by_type_is_exact_on_small_tables(task_type):
    other = TaskTypeFactory(identifier="other")
    TaskInstanceFactory.create_batch(3, type=task_type, status=Status.FINISHED)
    TaskInstanceFactory(type=other, status=Status.RUNNING)
    counts = stats.counts_by_type()
    assert not counts.estimated
    assert counts.of(task_type.pk) == {Status.FINISHED: 3}
    assert counts.totals()[Status.RUNNING] == 1


def test_estimated_count_is_exact_below_the_limit(task_type):
    TaskInstanceFactory.create_batch(5, type=task_type)
    assert estimated_count(TaskInstance.objects.all(), limit=10) == 5
    assert estimated_count(TaskInstance.objects.filter(status=Status.ACCEPTED), limit=10) == 5


@pytest.mark.postgres
def test_big_table_list_uses_the_row_estimate_not_a_count(task_type):
    TaskInstanceFactory.create_batch(30, type=task_type)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE atp_taskinstance")
    with CaptureQueriesContext(connection) as queries:
        total = estimated_count(TaskInstance.objects.all(), limit=10)
    assert total == 30  # reltuples after ANALYZE
    assert not any("COUNT(" in query["sql"].upper() for query in queries)
    # Filtered: at most limit + 1 rows are counted, then the planner's estimate is used.
    with CaptureQueriesContext(connection) as queries:
        filtered = estimated_count(TaskInstance.objects.filter(status=Status.ACCEPTED), limit=10)
    assert filtered >= 11
    assert any("LIMIT 11" in query["sql"] for query in queries)
    assert any(query["sql"].startswith("EXPLAIN") for query in queries)


@pytest.mark.postgres
def test_big_table_counts_ended_tasks_from_statistics(task_type, monkeypatch, viewer_client):
    TaskInstanceFactory.create_batch(40, type=task_type, status=Status.FINISHED)
    TaskInstanceFactory.create_batch(10, type=task_type, status=Status.FAILED)
    TaskInstanceFactory.create_batch(3, type=task_type, status=Status.ACCEPTED)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE atp_taskinstance")
    monkeypatch.setattr(stats, "EXACT_ROWS_LIMIT", 20)
    with CaptureQueriesContext(connection) as queries:
        counts = stats.counts_by_type()
    assert counts.estimated
    by_status = counts.of(task_type.pk)
    assert by_status[Status.ACCEPTED] == 3  # not ended: exact
    assert by_status[Status.FINISHED] == 40 and by_status[Status.FAILED] == 10  # statistics
    grouped = [q["sql"] for q in queries if "GROUP BY" in q["sql"]]
    assert grouped and all("NOT" in sql and "IN (5, 6, 7)" in sql for sql in grouped)
    page = viewer_client.get(DASHBOARD).content.decode()
    assert 'data-status="FINISHED">≈40<' in page and 'data-status="ACCEPTED">3<' in page


def test_dashboard_queue_depth_follows_the_tracker(viewer_client, enqueue):
    for n in range(3):
        enqueue(f"q{n}")
    assert tracker.get_queue_size() == 3
    page = viewer_client.get(DASHBOARD).content.decode()
    assert '<strong data-live="depth">3</strong> waiting' in page
