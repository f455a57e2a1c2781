"""The JSON HTTP API with Django's test client: every route, its replies, codes and users."""

import base64
import json

import pytest
from django.contrib.auth.models import Permission, User
from django.middleware.csrf import CSRF_ALLOWED_CHARS
from django.test import Client
from django.utils.crypto import get_random_string

from atp import tracker
from atp.http.views import MAX_PAGE
from atp.models import Status, TaskInstance, TaskType
from tests.unit.query_dataset import build

pytestmark = pytest.mark.django_db
PREFIX = "/atp/api"


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    # The default hasher is slow on purpose; these tests create and check many passwords.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def tasks():
    return build()


def make_user(name, *codenames, superuser=False):
    user = User.objects.create_user(name, password=f"{name}-password")
    user.is_superuser = superuser
    user.save()
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


@pytest.fixture
def admin_client():
    client = Client()
    client.force_login(make_user("admin", superuser=True))
    return client


@pytest.fixture
def reader_client():
    client = Client()
    client.force_login(make_user("reader", "view_taskinstance", "view_tasktype"))
    return client


@pytest.fixture
def nobody_client():
    client = Client()
    client.force_login(make_user("nobody"))
    return client


def post(client, url, body=None, **extra):
    data = json.dumps(body) if body is not None else ""
    return client.post(url, data, content_type="application/json", **extra)


def basic(name, password):
    token = base64.b64encode(f"{name}:{password}".encode()).decode()
    return {"HTTP_AUTHORIZATION": f"Basic {token}"}


# --- who may do what, on every route -----------------------------------------------------

READ_ROUTES = [
    "/tasks",
    "/task/types",
    "/task/info/{uuid}",
    "/task/result/{uuid}",
    "/workers",
]
ACT_ROUTES = [
    ("/task/async-apply/img.resize", {"kwargs": {"path": "x"}}),
    ("/task/send-task/img.resize", {"args": [1]}),
    ("/task/apply/img.resize", {"kwargs": {"path": "x"}, "timeout": 0}),
    ("/task/abort/{uuid}", None),
    ("/task/revoke/{uuid}", None),
    ("/task/rate-limit/img.resize?ratelimit=5/m", None),
    ("/task/timeout/img.resize?soft=5&hard=10", None),
]


def url_of(route, tasks):
    return PREFIX + route.format(uuid=tasks["resize-3"].uuid)


@pytest.mark.parametrize("route", READ_ROUTES)
def test_reading_needs_a_user_with_view_permission(tasks, route, reader_client, nobody_client):
    anonymous = Client().get(url_of(route, tasks))
    assert anonymous.status_code == 401
    assert anonymous["WWW-Authenticate"].startswith("Basic")
    assert anonymous.json() == {"error": "authentication required (session or HTTP Basic)"}
    assert nobody_client.get(url_of(route, tasks)).status_code == 403
    assert reader_client.get(url_of(route, tasks)).status_code == 200


@pytest.mark.parametrize("route, body", ACT_ROUTES)
def test_acting_needs_a_user_with_change_permission(
    tasks, route, body, reader_client, nobody_client, admin_client
):
    assert post(Client(), url_of(route, tasks), body).status_code == 401
    assert post(nobody_client, url_of(route, tasks), body).status_code == 403
    refused = post(reader_client, url_of(route, tasks), body)
    assert refused.status_code == 403 and "permission" in refused.json()["error"]
    assert TaskInstance.objects.get(identifier="resize-3").status == Status.ACCEPTED
    assert post(admin_client, url_of(route, tasks), body).status_code == 200


def test_task_actions_and_type_settings_need_their_own_permissions(tasks):
    operator = Client()
    operator.force_login(make_user("operator", "change_taskinstance"))
    assert post(operator, url_of("/task/revoke/{uuid}", tasks)).status_code == 200
    assert post(operator, f"{PREFIX}/task/rate-limit/img.resize?ratelimit=1/s").status_code == 403
    assert operator.get(f"{PREFIX}/tasks").status_code == 403


def test_http_basic_auth_against_django_users(tasks):
    make_user("script", "view_taskinstance", "change_taskinstance")
    client = Client()
    assert client.get(f"{PREFIX}/tasks", **basic("script", "script-password")).status_code == 200
    assert client.get(f"{PREFIX}/tasks", **basic("script", "wrong")).status_code == 401
    assert client.get(f"{PREFIX}/tasks", **basic("ghost", "x")).status_code == 401
    garbled = {"HTTP_AUTHORIZATION": "Basic !!!not-base64"}
    assert client.get(f"{PREFIX}/tasks", **garbled).status_code == 401
    no_colon = {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(b"script").decode()}
    assert client.get(f"{PREFIX}/tasks", **no_colon).status_code == 401


def test_inactive_users_are_refused(tasks):
    user = make_user("gone", "view_taskinstance")
    user.is_active = False
    user.save()
    assert Client().get(f"{PREFIX}/tasks", **basic("gone", "gone-password")).status_code == 401


def test_wrong_method_is_405(tasks, admin_client):
    refused = admin_client.post(f"{PREFIX}/tasks")
    assert refused.status_code == 405 and "GET" in refused["Allow"]
    assert admin_client.get(f"{PREFIX}/task/apply/img.resize").status_code == 405
    assert admin_client.head(f"{PREFIX}/tasks").status_code == 200


# --- CSRF -----------------------------------------------------------------------------------


def test_session_posts_need_a_csrf_token(tasks):
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user("admin", superuser=True))
    url = url_of("/task/revoke/{uuid}", tasks)
    refused = client.post(url)
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]
    assert TaskInstance.objects.get(identifier="resize-3").status == Status.ACCEPTED
    # What a page of the site does: send back the CSRF cookie's secret in the header.
    secret = get_random_string(32, CSRF_ALLOWED_CHARS)
    client.cookies["csrftoken"] = secret
    assert client.post(url, HTTP_X_CSRFTOKEN=secret).status_code == 200
    assert TaskInstance.objects.get(identifier="resize-3").status == Status.REVOKED


def test_basic_auth_scripts_need_no_token_but_browsers_do(tasks):
    make_user("script", "change_taskinstance")
    client = Client(enforce_csrf_checks=True)
    url = url_of("/task/abort/{uuid}", tasks)
    from_browser = post(
        client,
        url,
        HTTP_ORIGIN="https://evil.example",
        **basic("script", "script-password"),
    )
    assert from_browser.status_code == 403 and "CSRF" in from_browser.json()["error"]
    assert TaskInstance.objects.get(identifier="resize-3").status == Status.ACCEPTED
    assert post(client, url, **basic("script", "script-password")).status_code == 200
    assert TaskInstance.objects.get(identifier="resize-3").status == Status.REVOKED


# --- /api/tasks -----------------------------------------------------------------------------


def test_tasks_is_an_ordered_object_of_task_dicts(tasks, reader_client):
    reply = reader_client.get(f"{PREFIX}/tasks", {"sort_by": "-received", "limit": 3})
    assert reply.status_code == 200
    body = reply.json()
    assert list(body) == [str(tasks[name].uuid) for name in ("thumb-3", "mail-4", "mail-3")]
    info = body[str(tasks["thumb-3"].uuid)]
    assert (info["name"], info["state"], info["worker"]) == ("img.thumbnail", "SUCCESS", "0xAAA")
    assert info["uuid"] == str(tasks["thumb-3"].uuid) and info["identifier"] == "thumb-3"


def test_tasks_filters_paging_and_search(tasks, reader_client):
    def identifiers(**params):
        body = reader_client.get(f"{PREFIX}/tasks", params).json()
        return {info["identifier"] for info in body.values()}

    assert identifiers(taskname="img.resize", state="FAILURE") == {"resize-2"}
    assert identifiers(workername="node-b") == {"resize-2", "mail-2"}
    assert identifiers(taskname="All", state="All", workername="") == set(tasks)
    assert identifiers(received_start="2024-05-01 12:06", received_end="2024-05-01 12:07") == {
        "mail-3",
        "mail-4",
    }
    assert identifiers(started_start="2024-05-01 12:08") == {"thumb-3"}
    assert identifiers(search="name:mail (state:PAUSED OR state:REVOKED)") == {"mail-1", "mail-3"}
    assert identifiers(sort_by="name", limit=2, offset=3) == {"thumb-1", "thumb-2"}
    assert identifiers(search="nothing-matches-this") == set()


@pytest.mark.parametrize(
    "params, message",
    [
        ({"limit": "ten"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"limit": str(MAX_PAGE + 1)}, "at most"),
        ({"sort_by": "priority"}, "sort keys"),
        ({"state": "DONE"}, "unknown task state"),
        ({"received_start": "last week"}, "not a time"),
        ({"search": "(unclosed"}, "never closed"),
        ({"search": "NOT this"}, "NOT"),
    ],
)
def test_tasks_bad_parameters_are_400_with_a_message(tasks, reader_client, params, message):
    reply = reader_client.get(f"{PREFIX}/tasks", params)
    assert reply.status_code == 400
    assert message in reply.json()["error"]


def test_tasks_of_an_empty_database_is_an_empty_object(reader_client):
    assert reader_client.get(f"{PREFIX}/tasks").json() == {}


# --- info, result, types, workers -------------------------------------------------------------


def test_task_info_by_uuid_or_id(tasks, reader_client):
    task = tasks["resize-2"]
    for key in (task.uuid, task.pk):
        info = reader_client.get(f"{PREFIX}/task/info/{key}").json()
        assert (info["uuid"], info["state"]) == (str(task.uuid), "FAILURE")
        assert info["exception"] == "OSError: disk full"


@pytest.mark.parametrize("key", ["00000000-0000-4000-8000-000000000000", "999999", "junk"])
def test_task_info_of_unknown_task_is_404(tasks, reader_client, key):
    reply = reader_client.get(f"{PREFIX}/task/info/{key}")
    assert reply.status_code == 404 and reply.json() == {"error": f"Unknown task '{key}'"}


def test_task_result_shapes(tasks, reader_client):
    pending = tasks["resize-3"]
    assert reader_client.get(f"{PREFIX}/task/result/{pending.uuid}").json() == {
        "task-id": str(pending.uuid),
        "state": "PENDING",
    }
    done = tasks["resize-1"]
    assert reader_client.get(f"{PREFIX}/task/result/{done.uuid}?timeout=1").json() == {
        "task-id": str(done.uuid),
        "state": "SUCCESS",
        "result": {"size": 1234},
    }
    failed = reader_client.get(f"{PREFIX}/task/result/{tasks['resize-2'].pk}").json()
    assert failed["state"] == "FAILURE" and failed["result"] == "OSError: disk full"
    assert failed["traceback"].endswith("disk full")


def test_task_result_errors(tasks, reader_client):
    assert reader_client.get(f"{PREFIX}/task/result/999999").status_code == 404
    bad = reader_client.get(f"{PREFIX}/task/result/{tasks['resize-1'].uuid}?timeout=soon")
    assert bad.status_code == 400 and "timeout" in bad.json()["error"]
    negative = reader_client.get(f"{PREFIX}/task/result/{tasks['resize-1'].uuid}?timeout=-1")
    assert negative.status_code == 400


def test_task_types_lists_sorted_names(tasks, reader_client):
    assert reader_client.get(f"{PREFIX}/task/types").json() == {
        "task-types": ["img.resize", "img.thumbnail", "mail.send"]
    }


def test_workers_lists_registered_daemons(tasks, reader_client):
    body = reader_client.get(f"{PREFIX}/workers").json()
    assert set(body) == {"0xAAA", "0xBBB"}
    node_a = body["0xAAA"]
    assert (node_a["hostname"], node_a["alive"]) == ("node-a", True)
    assert node_a["active"] == 2  # thumb-1 RUNNING, mail-4 SCHEDULED
    assert reader_client.get(f"{PREFIX}/workers", {"status": "true"}).json() == {
        "0xAAA": True,
        "0xBBB": True,
    }
    assert list(reader_client.get(f"{PREFIX}/workers", {"workername": "node-b"}).json()) == [
        "0xBBB"
    ]
    unknown = reader_client.get(f"{PREFIX}/workers", {"workername": "node-z"})
    assert unknown.status_code == 404 and unknown.json() == {"error": "Unknown worker 'node-z'"}


# --- apply, async-apply, send-task ------------------------------------------------------------


def test_async_apply_enqueues_with_kwargs_and_options(tasks, admin_client):
    reply = post(
        admin_client,
        f"{PREFIX}/task/async-apply/img.resize",
        {"kwargs": {"path": "/x.tif"}, "priority": 7, "countdown": 60, "identifier": "via-api"},
    )
    assert reply.status_code == 200
    body = reply.json()
    assert set(body) == {"task-id", "state"} and body["state"] == "PENDING"
    task = TaskInstance.objects.get(uuid=body["task-id"])
    assert (task.identifier, task.input, task.priority) == ("via-api", {"path": "/x.tif"}, 7)
    assert (task.run_after - task.enqueued_at).total_seconds() == pytest.approx(60, abs=1)


def test_async_apply_takes_args_input_eta_and_expires(tasks, admin_client):
    url = f"{PREFIX}/task/async-apply/img.resize"
    by_args = post(admin_client, url, {"args": [1, "two"]}).json()
    assert TaskInstance.objects.get(uuid=by_args["task-id"]).input == [1, "two"]
    by_input = post(admin_client, url, {"input": "plain"}).json()
    assert TaskInstance.objects.get(uuid=by_input["task-id"]).input == "plain"
    timed = post(
        admin_client,
        url,
        {"eta": "2030-01-02 03:04:05.000000", "expires": "2030-01-03T00:00:00+00:00"},
    ).json()
    task = TaskInstance.objects.get(uuid=timed["task-id"])
    assert task.run_after.isoformat() == "2030-01-02T03:04:05+00:00"
    assert task.expires.isoformat() == "2030-01-03T00:00:00+00:00"


def test_send_task_enqueues_by_name(tasks, admin_client):
    body = post(admin_client, f"{PREFIX}/task/send-task/mail.send", {"kwargs": {"to": "a"}}).json()
    assert TaskInstance.objects.get(uuid=body["task-id"]).type.identifier == "mail.send"


@pytest.mark.parametrize("endpoint", ["apply", "async-apply", "send-task"])
def test_apply_endpoints_404_on_unknown_types(tasks, admin_client, endpoint):
    reply = post(admin_client, f"{PREFIX}/task/{endpoint}/no.such.type", {})
    assert reply.status_code == 404 and "no.such.type" in reply.json()["error"]


@pytest.mark.parametrize(
    "body, message",
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "invalid options"),
        ('{"args": "x"}', "args must be an array"),
        ('{"kwargs": [1]}', "kwargs must be an object"),
        ('{"queue_name": "x"}', "Invalid option"),
        ('{"args": [1], "input": {"a": 1}}', "one JSON value"),
        ('{"countdown": "soon"}', "countdown"),
        ('{"eta": "tomorrow"}', "not a time"),
        ('{"input": {"bad": NaN}}', "JSON"),
    ],
)
def test_apply_endpoints_400_on_bad_bodies(tasks, admin_client, body, message):
    reply = admin_client.post(
        f"{PREFIX}/task/async-apply/img.resize", body, content_type="application/json"
    )
    assert reply.status_code == 400 and message in reply.json()["error"]
    assert TaskInstance.objects.count() == len(tasks)


def test_apply_waits_and_replies_without_result_if_the_task_did_not_end(tasks, admin_client):
    reply = post(admin_client, f"{PREFIX}/task/apply/img.resize", {"args": [1], "timeout": 0.1})
    body = reply.json()
    assert reply.status_code == 200 and set(body) == {"task-id", "state"}
    assert body["state"] == "PENDING"


def test_duplicate_identifier_is_409_and_full_queue_503(tasks, admin_client, settings):
    url = f"{PREFIX}/task/async-apply/img.resize"
    duplicate = post(admin_client, url, {"identifier": "resize-1"})
    assert duplicate.status_code == 409
    settings.ATP = {"MAX_QUEUE_SIZE": 1}
    full = post(admin_client, url, {})
    assert full.status_code == 503 and "limit" in full.json()["error"]


# --- abort and revoke -------------------------------------------------------------------------


def test_abort_replies_flowers_message(tasks, admin_client):
    pending = tasks["resize-3"]
    reply = post(admin_client, f"{PREFIX}/task/abort/{pending.uuid}")
    assert reply.json() == {"message": f"Aborted '{pending.uuid}'"}
    assert TaskInstance.objects.get(pk=pending.pk).status == Status.REVOKED
    again = post(admin_client, f"{PREFIX}/task/abort/{pending.uuid}").json()
    assert "already ended" in again["message"]
    assert post(admin_client, f"{PREFIX}/task/abort/999999").status_code == 404


def test_revoke_with_terminate_and_signal(tasks, admin_client):
    running = tasks["thumb-1"]
    reply = post(admin_client, f"{PREFIX}/task/revoke/{running.uuid}?terminate=true&signal=SIGKILL")
    assert reply.json() == {"message": f"Revoked '{running.uuid}'"}
    task = TaskInstance.objects.get(pk=running.pk)
    assert (task.status, task.kill_signal) == (Status.RUNNING, 9)


def test_revoke_reads_form_bodies_too(tasks, admin_client):
    pending = tasks["resize-3"]
    reply = admin_client.post(f"{PREFIX}/task/revoke/{pending.pk}", {"terminate": "no"})
    assert reply.status_code == 200
    assert TaskInstance.objects.get(pk=pending.pk).status == Status.REVOKED


@pytest.mark.parametrize(
    "query, message", [("terminate=maybe", "terminate"), ("terminate=1&signal=SIGNOPE", "signal")]
)
def test_revoke_bad_arguments_are_400(tasks, admin_client, query, message):
    reply = post(admin_client, f"{PREFIX}/task/revoke/{tasks['thumb-1'].uuid}?{query}")
    assert reply.status_code == 400 and message in reply.json()["error"]
    assert TaskInstance.objects.get(identifier="thumb-1").kill_signal is None


def test_revoke_unknown_task_is_404(tasks, admin_client):
    assert post(admin_client, f"{PREFIX}/task/revoke/{'1' * 8}").status_code == 404


# --- rate limit and timeouts ------------------------------------------------------------------


def test_rate_limit_sets_and_disables(tasks, admin_client):
    url = f"{PREFIX}/task/rate-limit/img.resize"
    assert post(admin_client, f"{url}?ratelimit=10/m&workername=anything").json() == {
        "message": "new rate limit set successfully"
    }
    assert TaskType.objects.get(identifier="img.resize").rate_limit == "10/m"
    assert admin_client.post(url, {"ratelimit": "0"}).json() == {
        "message": "rate limit disabled successfully"
    }
    assert TaskType.objects.get(identifier="img.resize").rate_limit == ""


def test_rate_limit_errors(tasks, admin_client):
    missing = post(admin_client, f"{PREFIX}/task/rate-limit/img.resize")
    assert missing.status_code == 400 and "ratelimit" in missing.json()["error"]
    bad = post(admin_client, f"{PREFIX}/task/rate-limit/img.resize?ratelimit=fast")
    assert bad.status_code == 400
    unknown = post(admin_client, f"{PREFIX}/task/rate-limit/no.type?ratelimit=1/s")
    assert unknown.status_code == 404


def test_timeout_sets_soft_and_hard_limits(tasks, admin_client):
    reply = post(admin_client, f"{PREFIX}/task/timeout/img.resize?soft=30&hard=60.5")
    assert reply.json() == {"message": "time limits set successfully"}
    task_type = TaskType.objects.get(identifier="img.resize")
    assert (task_type.soft_time_limit, task_type.hard_time_limit) == (30.0, 60.5)


@pytest.mark.parametrize(
    "query, status", [("soft=60&hard=30", 400), ("soft=abc", 400), ("hard=-1", 400)]
)
def test_timeout_errors(tasks, admin_client, query, status):
    assert post(admin_client, f"{PREFIX}/task/timeout/img.resize?{query}").status_code == status
    assert post(admin_client, f"{PREFIX}/task/timeout/no.type?soft=1").status_code == 404


def test_type_names_with_slashes_route(admin_client, db):
    tracker.register_task_type("group/job", "tests.support.handlers.noop")
    reply = post(admin_client, f"{PREFIX}/task/async-apply/group/job", {})
    assert reply.status_code == 200
