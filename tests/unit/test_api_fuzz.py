"""Fuzzing the HTTP API from its OpenAPI description: no answer is a 5xx, every answer JSON.

schemathesis generates requests for every route of ``atp/http/openapi.py``, valid ones and
invalid ones (wrong types, out-of-range numbers, odd Unicode, broken bodies), and sends them
to the Django app through WSGI as a superuser with HTTP Basic credentials. Some path
parameters are swapped for a registered type or an existing task, so the requests reach
the code behind the lookups too. The queue has no limit here: its one intended 5xx (503
queue full) cannot occur, so any 5xx is a bug.
"""

import base64
import json
import zlib
from collections import Counter

import pytest
import schemathesis
from django.contrib.auth.models import User
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings

from atp import tracker
from atp.http.openapi import document

pytestmark = pytest.mark.django_db

#: Generated requests per route (valid and invalid together): enough to find the known
#: classes of 500s, few enough for the whole module to run in well under 2 minutes.
EXAMPLES = 40
TYPES = ("fuzz.plain", "fuzz/slashed")
PASSWORD = "fuzz-password"

schema = schemathesis.openapi.from_dict(document("/atp"))
schema.app = WSGIHandler()
#: Counts over the module: requests sent, and answers of 500 or more.
SEEN: Counter = Counter()


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    print(f"\nAPI fuzz: {SEEN['requests']} requests, {SEEN['5xx']} answers >= 500")


@pytest.fixture
def world(settings):
    """A superuser, two types and a few tasks; the database connection kept between requests.

    A real server closes the connection after each request; here it must stay open, since
    the test's transaction lives on it (Django's own test client does the same).
    """
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.ATP = {"MAX_QUEUE_SIZE": None, "API_MAX_WAIT": 0.05}
    User.objects.create_superuser("fuzz", password=PASSWORD)
    for name in TYPES:
        tracker.register_task_type(name, "tests.support.handlers.noop")
    ids = [tracker.enqueue_task(TYPES[0], f"task-{n}", {"n": n}) for n in range(3)]
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield ids
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def _aim(case, task_ids) -> None:
    """Point two of three cases' ``name``/``task_id`` at a registered type or a real task."""
    parameters = case.path_parameters or {}
    for key, choices in (("name", TYPES), ("task_id", [str(i) for i in task_ids])):
        value = parameters.get(key)
        if isinstance(value, str):
            pick = zlib.crc32(value.encode("utf-8", "surrogatepass"))
            if pick % 3:
                parameters[key] = choices[pick % len(choices)]


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_answer_is_a_server_error_and_every_answer_is_json(case, world):
    _aim(case, world)
    token = base64.b64encode(f"fuzz:{PASSWORD}".encode()).decode()
    response = case.call(headers={"Authorization": f"Basic {token}"})
    SEEN["requests"] += 1
    SEEN["5xx"] += response.status_code >= 500
    where = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
    assert response.status_code < 500, where
    content_type = response.headers.get("content-type", [""])[0]  # lower-case keys, lists
    assert content_type.startswith("application/json"), where
    body = json.loads(response.text)
    if response.status_code >= 400:
        assert isinstance(body, dict) and isinstance(body.get("error"), str), where
