"""The console's live JSON endpoints, the due-only oldest task, charts and time cells."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from atp import tracker
from atp.admin import charts, display, stats
from atp.models import Status, TaskInstance
from tests.support.admin_fixtures import DASHBOARD, TASKS
from tests.support.factories import TaskInstanceFactory, WorkerFactory

pytestmark = pytest.mark.django_db

LIVE = TASKS + "live/"


def test_live_endpoints_need_the_view_permission(anonymous_client, viewer_client, enqueue):
    from django.contrib.auth.models import User
    from django.test import Client

    task_id = enqueue("one")
    urls = [LIVE + "dashboard.json", LIVE + f"tasks.json?ids={task_id}", LIVE + "workers.json"]
    nobody = Client()
    nobody.force_login(User.objects.create_user("nobody", is_staff=True))
    for url in urls:
        assert anonymous_client.get(url).status_code == 302, url
        assert nobody.get(url).status_code == 403, url
        assert viewer_client.get(url).status_code == 200, url


def test_dashboard_json_counts_follow_the_tracker(viewer_client, running, enqueue):
    task_id, attempt = running("runs")
    enqueue("waits")
    before = viewer_client.get(LIVE + "dashboard.json").json()["text"]
    assert before["status-ACCEPTED"] == "1" and before["status-RUNNING"] == "1"
    assert before["depth"] == "1" and before["ended"] == "0"
    tracker.stop_task_success(task_id, "done", attempt=attempt)
    after = viewer_client.get(LIVE + "dashboard.json").json()["text"]
    assert after["status-RUNNING"] == "0" and after["status-FINISHED"] == "1"
    assert after["ended"] == "1" and after["failed"] == "0"


def test_tasks_json_gives_the_row_cells(viewer_client, running):
    task_id, attempt = running("busy")
    tracker.set_task_progress(task_id, 1, 4, attempt=attempt)
    rows = viewer_client.get(LIVE + f"tasks.json?ids={task_id},x,999999").json()["rows"]
    assert list(rows) == [str(task_id)]
    cells = rows[str(task_id)]
    assert "atp-status-running" in cells["status_badge"] and 'title="25%"' in cells["progress_bar"]
    assert cells["server"] == "server-1" and cells["finished"] == "—"
    assert re.search(r">\d\d:\d\d:\d\d<", cells["started"])  # to the second


def test_workers_json_gives_heartbeat_and_liveness(viewer_client, running):
    WorkerFactory(server_id="server-1")
    running("busy")
    rows = viewer_client.get(LIVE + "workers.json?ids=server-1,unknown").json()["rows"]
    assert list(rows) == ["server-1"]
    assert "s ago" in rows["server-1"]["heartbeat_at"] and "icon-yes" in rows["server-1"]["alive"]
    assert ">1</a>" in rows["server-1"]["tasks_running"]


def test_list_pages_load_the_live_script(viewer_client, enqueue):
    enqueue("one")
    for url in (TASKS, "/admin/atp/worker/", DASHBOARD):
        page = viewer_client.get(url).content.decode()
        assert 'id="atp-live"' in page and "atp/live.js" in page, url


def test_oldest_waiting_ignores_tasks_scheduled_ahead(enqueue):
    now = timezone.now()
    enqueue("tomorrow", run_after=now + timedelta(hours=20))
    assert stats.oldest_waiting(now) is None
    due = enqueue("due-now")
    assert stats.oldest_waiting(now + timedelta(seconds=1)).pk == due
    depths = {depth.queue: depth for depth in stats.queue_depths(now + timedelta(seconds=1))}
    assert (depths["default"].due, depths["default"].ahead) == (1, 1)


def test_runtime_percentiles(task_type):
    now = timezone.now()
    for seconds in range(1, 21):  # run times 1 … 20 s
        TaskInstanceFactory(
            type=task_type,
            status=Status.FINISHED,
            started_at=now - timedelta(seconds=seconds + 5),
            finished_at=now - timedelta(seconds=5),
        )
    (found,) = stats.runtime_percentiles(now)
    assert (found.count, found.p50, found.p95, found.max) == (20, 10.0, 19.0, 20.0)


def test_throughput_chart_has_ticks_grid_legend_and_labels_every_ten_minutes(task_type):
    now = timezone.now().replace(second=30)
    TaskInstanceFactory.create_batch(3, type=task_type, status=Status.FAILED, finished_at=now)
    svg = str(charts.throughput_svg(stats.throughput(now)))
    assert svg.count('text-anchor="middle"') == 6  # one x label per 10 minutes of 60
    assert "atp-legend" in svg and "finished" in svg and "failure rate" in svg
    assert "√ scale" in svg and svg.count('stroke="#e5e5e5"') >= 3  # gridlines


def test_sqrt_scale_keeps_small_minutes_visible():
    assert charts.nice_ceiling(730) == 1000 and charts.nice_ceiling(3) == 5
    assert charts.sqrt_ticks(1000) == [0, 2, 10, 50, 200, 1000]
    assert charts.nice_ticks(50) == [0, 10, 20, 30, 40, 50]


def test_fan_out_parent_progress_bar():
    ended = {"total": 4, "attempted": 4, "succeeded": 3, "failed": 1, "skipped": 0}
    assert 'title="100%"' in display.progress_bar(ended)
    half = {"total": 4, "attempted": 2, "succeeded": 1, "failed": 0, "skipped": 1}
    assert 'title="50%"' in display.progress_bar(half)


def test_time_cells_show_seconds_and_ages():
    now = timezone.now()
    assert display.ago(now - timedelta(seconds=12), now) == "12 s ago"
    assert display.ago(now - timedelta(seconds=250), now) == "4 min 10 s ago"
    cell = str(display.timestamp(now - timedelta(seconds=3), now))
    assert re.search(r">(\d\d-\d\d )?\d\d:\d\d:\d\d</span>", cell) and "3 s ago" in cell


def test_dashboard_lists_a_recently_lost_daemon(viewer_client):
    WorkerFactory(server_id="gone-daemon", heartbeat_at=timezone.now() - timedelta(minutes=5))
    page = viewer_client.get(DASHBOARD).content.decode()
    assert "gone-daemon" in page.split("Recently lost daemons")[1]


def test_task_page_buttons_return_to_the_filtered_list(superuser_client, running):
    from urllib.parse import quote

    task_id, _ = running("busy")
    filters = quote(f"status__exact={Status.RUNNING}&q=busy", safe="")
    page = superuser_client.get(f"{TASKS}{task_id}/change/?_changelist_filters={filters}")
    html = page.content.decode()
    assert f'action="{TASKS}?status__exact={Status.RUNNING}&amp;q=busy"' in html
    response = superuser_client.post(
        f"{TASKS}?status__exact={Status.RUNNING}&q=busy",
        {"action": "abort", "_selected_action": [task_id]},
    )
    assert response.status_code == 302
    assert response["Location"] == f"{TASKS}?status__exact={Status.RUNNING}&q=busy"


def test_task_page_times_show_seconds(viewer_client, running):
    task_id, _ = running("busy")
    page = viewer_client.get(f"{TASKS}{task_id}/change/").content.decode()
    started = TaskInstance.objects.get(pk=task_id).started_at
    assert timezone.localtime(started).strftime("%Y-%m-%d %H:%M:%S") in page
    assert "s ago)</small>" in page


def test_dashboard_pause_buttons_for_queues_and_types(superuser_client, viewer_client, enqueue):
    from atp.models import QueuePause, TaskType

    enqueue("waits")
    page = superuser_client.get(DASHBOARD).content.decode()
    assert 'class="atp-pause-queue" data-name="default"' in page
    assert 'class="atp-pause-type" data-name="test.noop"' in page
    assert "atp-pause-queue" not in viewer_client.get(DASHBOARD).content.decode()
    pause = TASKS + "pause/"
    form = {"target": "queue", "name": "default", "do": "pause"}
    assert viewer_client.post(pause, form).status_code == 403
    assert not QueuePause.objects.exists()
    response = superuser_client.post(pause, form, follow=True)
    assert "Queue default paused." in response.content.decode()
    assert list(QueuePause.objects.values_list("queue", flat=True)) == ["default"]
    assert 'class="atp-resume-queue" data-name="default"' in response.content.decode()
    superuser_client.post(pause, {"target": "type", "name": "test.noop", "do": "pause"})
    assert TaskType.objects.get(identifier="test.noop").paused
    superuser_client.post(pause, {"target": "queue", "name": "default", "do": "resume"})
    assert not QueuePause.objects.exists()
    assert superuser_client.get(pause).status_code == 405
