"""The admin's pages, filters and search, for superuser, view-only staff and anonymous users."""

import uuid
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from atp import tracker
from atp.models import Status, TaskInstance
from tests.support.admin_fixtures import ADMIN, DASHBOARD, TASKS
from tests.support.factories import (
    ResponseFactory,
    TaskInstanceFactory,
    TaskTypeFactory,
    WorkerFactory,
)
from tests.support.plans import plan

pytestmark = pytest.mark.django_db


@pytest.fixture
def failed(running):
    """A task that failed with an exception and a traceback."""
    task_id, attempt = running("broken", {"path": "/data/needle.tif"})
    tracker.stop_task_failure(
        task_id,
        "Handler raised.",
        attempt=attempt,
        exception="ValueError('bad pixel')",
        traceback='Traceback (most recent call last):\n  File "h.py", line 3\nValueError: <x>',
    )
    return TaskInstance.objects.get(pk=task_id)


def pages(task_id):
    return [
        ADMIN,
        TASKS,
        f"{TASKS}{task_id}/change/",
        DASHBOARD,
        ADMIN + "tasktype/",
        ADMIN + "worker/",
    ]


def test_every_page_renders_for_superuser_and_viewer(superuser_client, viewer_client, failed):
    WorkerFactory()
    for client in (superuser_client, viewer_client):
        for url in pages(failed.pk):
            assert client.get(url).status_code == 200, url


def test_anonymous_is_sent_to_the_login_page(anonymous_client, failed):
    for url in [*pages(failed.pk), f"{TASKS}{failed.pk}/response/"]:
        response = anonymous_client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"], url


def test_staff_without_permissions_is_refused(db, failed):
    client = Client()
    client.force_login(User.objects.create_user("nobody", is_staff=True))
    assert client.get(TASKS).status_code == 403
    assert client.get(DASHBOARD).status_code == 403
    ResponseFactory(instance=failed)
    assert client.get(f"{TASKS}{failed.pk}/response/").status_code == 403


def test_app_index_links_to_the_dashboard(viewer_client):
    page = viewer_client.get(ADMIN).content.decode()
    assert 'id="atp-dashboard-link"' in page and DASHBOARD in page


def test_list_shows_badge_progress_and_runtime(superuser_client, running):
    task_id, attempt = running("busy")
    tracker.set_task_progress(task_id, 3, 4, attempt=attempt)
    page = superuser_client.get(TASKS).content.decode()
    assert "atp-badge atp-status-running" in page
    assert 'class="atp-progress" title="75%"' in page
    assert "server-1" in page


def test_list_does_not_count_per_filter_or_the_full_table(superuser_client, task_type):
    response = superuser_client.get(TASKS + "?status__exact=6")
    changelist = response.context["cl"]
    assert changelist.show_full_result_count is False
    assert changelist.model_admin.show_facets.name == "NEVER"


def test_filter_by_status(superuser_client, failed, enqueue):
    enqueue("waiting-one")
    page = superuser_client.get(TASKS + f"?status__exact={Status.FAILED}").content.decode()
    assert "broken" in page and "waiting-one" not in page


def test_filter_by_type_and_server(superuser_client, failed):
    other = TaskInstanceFactory(identifier="elsewhere", status=Status.RUNNING, server_id="srv-9")
    WorkerFactory(server_id="srv-9")
    by_type = superuser_client.get(TASKS + f"?type__id__exact={failed.type_id}").content.decode()
    assert "broken" in by_type and "elsewhere" not in by_type
    by_server = superuser_client.get(TASKS + "?server=srv-9").content.decode()
    assert "elsewhere" in by_server and "broken" not in by_server
    unowned = superuser_client.get(TASKS + "?server=-").content.decode()
    assert other.identifier not in unowned


def test_filter_by_date(superuser_client, task_type):
    TaskInstanceFactory(identifier="old-one", enqueued_at=timezone.now() - timedelta(days=30))
    TaskInstanceFactory(identifier="new-one")
    since = (timezone.now() - timedelta(days=7)).isoformat()
    page = superuser_client.get(TASKS, {"enqueued_at__gte": since}).content.decode()
    assert "new-one" in page and "old-one" not in page


@pytest.mark.postgres
def test_the_date_filter_is_served_by_the_enqueue_time_brin_index(task_type):
    # Without it the paginator's count read the whole history when few tasks match
    # (migration 0015). A BRIN index is read by bitmap scans only (gin=True: no plain scans).
    since = timezone.now() - timedelta(days=1)
    matching = TaskInstance.objects.filter(enqueued_at__gte=since, enqueued_at__lt=timezone.now())
    assert "atp_task_enqueued_brin" in plan(matching, gin=True)


@pytest.mark.parametrize("term", ["needle.tif", "brok", "UUID", "ID"])
def test_search_by_input_identifier_uuid_and_id(superuser_client, failed, enqueue, term):
    enqueue("unrelated", {"path": "/data/hay.tif"})
    term = {"UUID": str(failed.uuid), "ID": str(failed.pk)}.get(term, term)
    page = superuser_client.get(TASKS, {"q": term}).content.decode()
    assert "broken" in page and "unrelated" not in page


def test_search_with_unknown_uuid_finds_nothing(superuser_client, failed):
    page = superuser_client.get(TASKS, {"q": str(uuid.uuid4())}).content.decode()
    assert "broken" not in page


def test_detail_shows_input_traceback_and_timeline(viewer_client, failed):
    page = viewer_client.get(f"{TASKS}{failed.pk}/change/").content.decode()
    assert (
        '<pre class="atp-json"' in page and "&quot;path&quot;: &quot;/data/needle.tif&quot;" in page
    )
    assert '<pre class="atp-traceback"' in page and "ValueError: &lt;x&gt;" in page
    assert "ValueError(&#x27;bad pixel&#x27;)" in page
    for event in ("task-sent", "task-received", "task-started", "task-failed"):
        assert f"<td>{event}</td>" in page
    # A viewer sees no action buttons.
    assert "atp-action-reenqueue" not in page


def test_detail_shows_action_buttons_to_those_who_may_change(superuser_client, failed):
    page = superuser_client.get(f"{TASKS}{failed.pk}/change/").content.decode()
    assert "atp-action-reenqueue" in page


def test_text_response_is_shown_and_downloadable(viewer_client, failed):
    ResponseFactory(instance=failed, data=b"<result>ok</result>", mime_type="application/xml")
    page = viewer_client.get(f"{TASKS}{failed.pk}/change/").content.decode()
    assert "&lt;result&gt;ok&lt;/result&gt;" in page
    download = viewer_client.get(f"{TASKS}{failed.pk}/response/")
    assert download.status_code == 200
    assert download["Content-Type"] == "application/xml"
    assert download.content == b"<result>ok</result>"
    assert download["Content-Disposition"].startswith("attachment;")


def test_binary_response_is_a_download_link_only(viewer_client, failed):
    ResponseFactory(instance=failed, data=b"\x89PNG\r\n\x1a\n\x00", mime_type="image/png")
    page = viewer_client.get(f"{TASKS}{failed.pk}/change/").content.decode()
    assert f"{TASKS}{failed.pk}/response/" in page and "atp-response" not in page
    download = viewer_client.get(f"{TASKS}{failed.pk}/response/")
    assert download["Content-Type"] == "image/png"
    assert download.content == b"\x89PNG\r\n\x1a\n\x00"
    assert download["X-Content-Type-Options"] == "nosniff"
    assert ".png" in download["Content-Disposition"]


def test_missing_response_download_is_404(viewer_client, failed):
    assert viewer_client.get(f"{TASKS}{failed.pk}/response/").status_code == 404


def test_parent_and_subtask_links(superuser_client, enqueue):
    parent = enqueue("parent-task")
    child = enqueue("child-task", parent=parent)
    parent_page = superuser_client.get(f"{TASKS}{parent}/change/").content.decode()
    assert f"{TASKS}{child}/change/" in parent_page
    assert f"parent__id__exact={parent}" in parent_page
    child_page = superuser_client.get(f"{TASKS}{child}/change/").content.decode()
    assert f"{TASKS}{parent}/change/" in child_page
    listed = superuser_client.get(TASKS + f"?parent__id__exact={parent}").content.decode()
    assert "child-task" in listed and "parent-task" not in listed


def test_daemon_owned_fields_are_read_only(superuser_client, running):
    task_id, _ = running("owned")
    superuser_client.post(
        f"{TASKS}{task_id}/change/",
        {"status": Status.FINISHED, "server_id": "evil", "attempts": 9, "priority": 7},
    )
    task = TaskInstance.objects.get(pk=task_id)
    assert (task.status, task.server_id, task.attempts) == (Status.RUNNING, "server-1", 1)


def test_queue_placement_is_editable_while_not_ended(superuser_client, enqueue):
    task_id = enqueue("movable")
    task = TaskInstance.objects.get(pk=task_id)
    response = superuser_client.post(
        f"{TASKS}{task_id}/change/",
        {
            "priority": 7,
            "run_after_0": task.run_after.strftime("%Y-%m-%d"),
            "run_after_1": task.run_after.strftime("%H:%M:%S"),
            "expires_0": "",
            "expires_1": "",
        },
    )
    assert response.status_code == 302
    assert TaskInstance.objects.get(pk=task_id).priority == 7


def test_viewer_cannot_edit(viewer_client, enqueue):
    task_id = enqueue("fixed")
    response = viewer_client.post(f"{TASKS}{task_id}/change/", {"priority": 7})
    assert response.status_code == 403
    assert TaskInstance.objects.get(pk=task_id).priority == 0


def test_tasks_cannot_be_added_by_hand(superuser_client):
    assert superuser_client.get(TASKS + "add/").status_code == 403


# --- task types ---------------------------------------------------------------------------


def test_type_list_shows_counts_limits_and_retention(viewer_client, failed, enqueue):
    enqueue("w1")
    enqueue("w2")
    tracker.register_task_type(
        "limited", "tests.support.handlers.noop", max_queue_size=5, timeret=86400, rate_limit="10/m"
    )
    page = viewer_client.get(ADMIN + "tasktype/").content.decode()
    assert "atp-status-accepted" in page and "</span> 2</a>" in page  # two waiting
    assert "atp-status-failed" in page
    assert "shared (64)" in page and ">5<" in page
    assert "forever" in page and "24 h 0 min" in page and "10/m" in page


def test_type_list_counts_with_one_query_whatever_the_number_of_types(
    superuser_client, django_assert_max_num_queries
):
    for n in range(2):
        TaskInstanceFactory(type=TaskTypeFactory(identifier=f"few-{n}"))
    with django_assert_max_num_queries(20) as few:
        superuser_client.get(ADMIN + "tasktype/")
    for n in range(8):
        TaskInstanceFactory(type=TaskTypeFactory(identifier=f"many-{n}"))
    with django_assert_max_num_queries(len(few.captured_queries)):
        superuser_client.get(ADMIN + "tasktype/")


def _type_form(**overrides):
    data = {
        "handler": "tests.support.handlers.noop",
        "timeout": 60,
        "timeret": -1,
        "maxrestart": 2,
        "priority": 0,
        "queue": "default",
        "max_queue_size": "",
        "max_retries": 0,
        "retry_backoff": 0,
        "retry_backoff_max": 600,
        "rate_limit": "",
        "soft_time_limit": "",
        "hard_time_limit": "",
        "options": "{}",
    }
    data.update(overrides)
    return data


def test_type_edit_is_validated_like_register_task_type(superuser_client, task_type):
    url = f"{ADMIN}tasktype/{task_type.pk}/change/"
    bad_handler = superuser_client.post(url, _type_form(handler="no.such.module"))
    assert bad_handler.status_code == 200
    assert "does not import" in bad_handler.content.decode()
    bad_rate = superuser_client.post(url, _type_form(rate_limit="lots"))
    assert bad_rate.status_code == 200 and "rate" in bad_rate.content.decode()
    ok = superuser_client.post(url, _type_form(timeout=120, rate_limit="5/s", timeret=0))
    assert ok.status_code == 302
    task_type.refresh_from_db()
    assert (task_type.timeout, task_type.rate_limit, task_type.timeret) == (120, "5/s", -1.0)


def test_viewer_cannot_edit_a_type(viewer_client, task_type):
    response = viewer_client.post(f"{ADMIN}tasktype/{task_type.pk}/change/", _type_form(timeout=5))
    assert response.status_code == 403
    task_type.refresh_from_db()
    assert task_type.timeout == 3600


# --- workers ------------------------------------------------------------------------------


def test_worker_list_shows_alive_dead_and_running_tasks(viewer_client, task_type):
    alive = WorkerFactory(server_id="alive-1")
    WorkerFactory(server_id="dead-1", heartbeat_at=timezone.now() - timedelta(minutes=5))
    for _ in range(3):
        TaskInstanceFactory(type=task_type, status=Status.RUNNING, server_id=alive.server_id)
    TaskInstanceFactory(type=task_type, status=Status.FINISHED, server_id=alive.server_id)
    page = viewer_client.get(ADMIN + "worker/").content.decode()
    assert page.count('alt="True"') == 1 and page.count('alt="False"') == 1
    assert '?server=alive-1">3</a>' in page
    only_alive = viewer_client.get(ADMIN + "worker/?alive=yes").content.decode()
    assert "alive-1" in only_alive and "dead-1" not in only_alive
    only_dead = viewer_client.get(ADMIN + "worker/?alive=no").content.decode()
    assert "dead-1" in only_dead and "alive-1" not in only_dead


def test_workers_cannot_be_added_or_edited(superuser_client):
    worker = WorkerFactory()
    assert superuser_client.get(ADMIN + "worker/add/").status_code == 403
    superuser_client.post(f"{ADMIN}worker/{worker.pk}/change/", {"hostname": "x", "pid": 1})
    worker.refresh_from_db()
    assert worker.hostname == "testhost"


def test_item_counts_show_on_the_parent_and_subtask_pages(superuser_client):
    """Issue 14.10: the parent's totals and a subtask's own counts, on their pages."""
    kind = TaskTypeFactory(identifier="fan")
    table = {
        "items": {"attempted": 7, "succeeded": 5, "failed": 2, "skipped": 1},
        "subtask_type": "fan",
        "subtasks": {
            "c1": {
                "status": "FINISHED",
                "items": {"attempted": 3, "succeeded": 3, "failed": 0, "skipped": 0},
            }
        },
    }
    parent = TaskInstanceFactory(type=kind, status=Status.WAITING, progress=table)
    child = TaskInstanceFactory(type=kind, identifier="c1", parent=parent, status=Status.FINISHED)
    page = superuser_client.get(f"{TASKS}{parent.pk}/change/").content.decode()
    assert "7 attempted, 5 succeeded, 2 failed, 1 skipped" in page
    page = superuser_client.get(f"{TASKS}{child.pk}/change/").content.decode()
    assert "3 attempted, 3 succeeded, 0 failed, 0 skipped" in page
