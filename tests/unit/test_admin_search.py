"""The task admin's search box speaks ATP's search language and reports syntax errors."""

import pytest

from atp import tracker
from atp.models import TaskInstance
from tests.support.admin_fixtures import TASKS

pytestmark = pytest.mark.django_db


@pytest.fixture
def refused(running):
    """A task that failed with a ConnectionRefusedError."""
    task_id, attempt = running("fetch-remote", {"url": "http://example.org/a"})
    tracker.stop_task_failure(
        task_id,
        "Handler raised.",
        attempt=attempt,
        exception="ConnectionRefusedError(111, 'Connection refused')",
        traceback="Traceback ...\nConnectionRefusedError: [Errno 111] Connection refused",
    )
    return TaskInstance.objects.get(pk=task_id)


def listed(client, query) -> str:
    response = client.get(TASKS, {"q": query})
    assert response.status_code == 200
    return response.content.decode()


def test_free_text_finds_the_exception(superuser_client, refused, enqueue):
    enqueue("fine-one", {"url": "http://example.org/b"})
    page = listed(superuser_client, "refused")
    assert "fetch-remote" in page and "fine-one" not in page


def test_prefixes_and_operators(superuser_client, refused, enqueue):
    enqueue("waiting-one", {"path": "/data/x.tif"})
    page = listed(superuser_client, "state:FAILURE OR kwargs:path=/data/x.tif")
    assert "fetch-remote" in page and "waiting-one" in page
    page = listed(superuser_client, "state:PENDING")
    assert "waiting-one" in page and "fetch-remote" not in page


def test_a_short_id_is_an_exact_lookup(superuser_client, refused, enqueue):
    enqueue("other-one")
    page = listed(superuser_client, str(refused.pk))
    assert "fetch-remote" in page and "other-one" not in page


def test_syntax_error_is_a_message_not_a_500(superuser_client, refused):
    page = listed(superuser_client, "(state:FAILURE")
    assert "Search not understood" in page and "is never closed" in page
    assert "fetch-remote" not in page
    page = listed(superuser_client, "state:NONSENSE")
    assert "Search not understood" in page


def test_help_text_names_the_language(superuser_client):
    assert "atp.query.search" in listed(superuser_client, "")
