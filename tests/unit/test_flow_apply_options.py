"""unique_key, unique_for and concurrency_key through the HTTP apply routes and the Django
tasks backend: the tracker's rules and checks, a 400 naming the field, nothing written."""

import json

import pytest
from django.contrib.auth.models import User
from django.test import Client

from atp import tracker
from atp.backends import enqueue_options
from atp.exceptions import InvalidInput
from atp.http.openapi import SCHEMA
from atp.models import TaskInstance, TaskType
from tests.support import task_functions
from tests.support.helpers import nothing_written

pytestmark = pytest.mark.django_db

API = "/atp/api/task"
ROUTES = ["apply", "async-apply", "send-task"]


@pytest.fixture
def client(task_type):
    user = User.objects.create_superuser("boss")
    client = Client()
    client.force_login(user)
    return client


def _post(client, route, body):
    return client.post(
        f"{API}/{route}/test.noop", json.dumps(body), content_type="application/json"
    )


@pytest.mark.parametrize("route", ROUTES)
def test_a_held_unique_key_creates_nothing_and_replies_with_its_task(client, route):
    body = {"kwargs": {"a": 1}, "unique_key": "sync-42", "timeout": 0}
    if route != "apply":
        body.pop("timeout")
    first = _post(client, route, body)
    assert first.status_code == 200 and first.json()["created"] is True
    task = TaskInstance.objects.get(uuid=first.json()["task-id"])
    assert task.unique_key == "sync-42"
    records = task.log.count()
    again = _post(client, route, {**body, "kwargs": {"a": 2}})
    assert again.status_code == 200
    assert again.json() == {**first.json(), "created": False}
    assert TaskInstance.objects.count() == 1 and task.log.count() == records
    # Without a unique_key the reply is Flower's, as before.
    assert "created" not in _post(client, route, {"args": [1], "timeout": 0}).json()


def test_unique_for_and_concurrency_key_are_stored(client, task_type):
    reply = _post(
        client,
        "async-apply",
        {"unique_key": "k", "unique_for": 600, "concurrency_key": "customer-7"},
    ).json()
    task = TaskInstance.objects.get(uuid=reply["task-id"])
    assert (task.unique_key, task.concurrency_key) == ("k", "customer-7")
    TaskInstance.objects.filter(pk=task.pk).update(status=6)  # FAILED: ended
    # Held for 600 s from its enqueue, ended or not; without unique_for, only until it ends.
    assert _post(client, "async-apply", {"unique_key": "k", "unique_for": 600}).json() == {
        "task-id": str(task.uuid),
        "state": "FAILURE",
        "result": None,
        "traceback": None,
        "created": False,
    }
    assert _post(client, "async-apply", {"unique_key": "k"}).json()["created"] is True


BAD = [
    ({"unique_key": ""}, "unique_key"),
    ({"unique_key": "k" * 65}, "unique_key"),
    ({"unique_key": 5}, "unique_key"),
    ({"concurrency_key": ""}, "concurrency_key"),
    ({"concurrency_key": "x" * 65}, "concurrency_key"),
    ({"unique_key": "k", "unique_for": -1}, "unique_for"),
    ({"unique_key": "k", "unique_for": "soon"}, "unique_for"),
    ({"unique_key": "k", "unique_for": 1e12}, "unique_for"),  # was an OverflowError (500)
    ({"unique_for": 60}, "unique_for needs a unique_key"),
]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(("body", "named"), BAD)
def test_bad_flow_options_are_400_naming_the_field_and_write_nothing(client, route, body, named):
    with nothing_written():
        reply = _post(client, route, {**body, "timeout": 0} if route == "apply" else body)
    assert reply.status_code == 400
    assert named in reply.json()["error"]


def test_the_openapi_description_has_the_options_and_the_reply_field():
    apply = SCHEMA["components"]["schemas"]["Apply"]["properties"]
    assert apply["unique_key"]["maxLength"] == apply["concurrency_key"]["maxLength"] == 64
    assert apply["unique_for"]["minimum"] == 0
    assert SCHEMA["components"]["schemas"]["Result"]["properties"]["created"]["type"] == "boolean"


# --- Django's tasks framework -----------------------------------------------------------------


def test_the_backend_takes_the_options_from_enqueue_options():
    with enqueue_options(unique_key="add-1", concurrency_key="c") as flow:
        first = task_functions.add.enqueue(1, 2)
        assert flow.created is True
        second = task_functions.add.enqueue(3, 4)
        assert flow.created is False
    assert second.id == first.id and second.args == [1, 2]
    task = TaskInstance.objects.get(uuid=first.id)
    assert (task.unique_key, task.concurrency_key) == ("add-1", "c")
    assert TaskInstance.objects.count() == 1
    # Outside the block, the options are gone: a plain enqueue.
    third = task_functions.add.enqueue(5, 6)
    assert TaskInstance.objects.get(uuid=third.id).unique_key is None


def test_the_backend_honours_unique_for_and_the_type_s_concurrency_limit():
    with enqueue_options(unique_key="once", unique_for=3600):
        first = task_functions.add.enqueue(1, 2)
    TaskInstance.objects.filter(uuid=first.id).update(status=5)  # FINISHED: held for an hour
    with enqueue_options(unique_key="once", unique_for=3600) as flow:
        assert task_functions.add.enqueue(1, 2).id == first.id and flow.created is False
    task_type = TaskType.objects.get(identifier=task_functions.add.module_path)
    tracker.register_task_type(task_type.identifier, task_type.handler, concurrency_limit=1)
    with enqueue_options(concurrency_key="k"):
        task_functions.add.enqueue(1, 1)
        task_functions.add.enqueue(2, 2)
    claimed = tracker.claim_tasks("s1", limit=10)
    assert len(claimed) == 1  # one place for key k


@pytest.mark.parametrize(("options", "named"), [(body, named) for body, named in BAD])
def test_the_backend_refuses_bad_options_and_writes_nothing(options, named):
    task_functions.add.enqueue(0, 0)  # its task type exists before the counts
    with nothing_written(), pytest.raises(InvalidInput, match=named):
        with enqueue_options(**options):
            task_functions.add.enqueue(1, 2)


def test_enqueue_options_refuses_an_unknown_option_at_once():
    with pytest.raises(InvalidInput, match="unknown ATP enqueue option"):
        with enqueue_options(priority=3):
            pass
