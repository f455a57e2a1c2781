"""Actions on all tasks matching the list's filters: count, confirmation, batches, permissions."""

from urllib.parse import urlencode

import pytest

from atp.admin import bulk
from atp.models import Status, TaskInstance
from tests.support.admin_fixtures import TASKS

pytestmark = pytest.mark.django_db

BULK = TASKS + "bulk/"


@pytest.fixture
def waiting(enqueue, task_type):
    """Seven waiting tasks named keep-*, five named drop-*."""
    keep = [enqueue(f"keep-{i}") for i in range(7)]
    drop = [enqueue(f"drop-{i}") for i in range(5)]
    return keep, drop


def run_all(client, filters, action, monkeypatch, batch_size):
    """Confirm and follow the batch pages the way the browser's auto-submit does."""
    monkeypatch.setattr(bulk, "BATCH_SIZE", batch_size)
    confirm = client.get(BULK, {"filters": filters, "action": action})
    assert confirm.status_code == 200
    form = {"filters": filters, "action": action, "after": 0, "upto": confirm.context["upto"]}
    form["tally"] = "{}"
    pages = 0
    while True:
        response = client.post(BULK, form)
        pages += 1
        if response.status_code == 302:
            return confirm, response, pages
        context = response.context
        form.update(after=context["after"], upto=context["upto"], tally=context["tally"])


def test_confirmation_states_the_count_of_all_matching(superuser_client, waiting):
    filters = urlencode({"q": "drop"})
    page = superuser_client.get(BULK, {"filters": filters, "action": "revoke"})
    assert page.context["count"] == 5
    assert 'id="atp-bulk-total">5<' in page.content.decode()
    # Only the count: nothing changed yet.
    assert TaskInstance.objects.filter(status=Status.REVOKED).count() == 0


def test_revoke_all_matching_runs_in_batches(superuser_client, waiting, monkeypatch):
    keep, drop = waiting
    filters = urlencode({"q": "drop", "status__exact": Status.ACCEPTED})
    _, done, pages = run_all(superuser_client, filters, "revoke", monkeypatch, batch_size=2)
    assert pages == 4  # 2 + 2 + 1, then the empty batch that finishes
    assert set(
        TaskInstance.objects.filter(status=Status.REVOKED).values_list("pk", flat=True)
    ) == set(drop)
    assert not TaskInstance.objects.filter(pk__in=keep).exclude(status=Status.ACCEPTED).exists()
    assert done["Location"].startswith(TASKS + "?")
    message = superuser_client.get(done["Location"]).content.decode()
    assert "Revoke: 5 task(s) changed" in message


def test_reenqueue_leaves_new_tasks_alone(superuser_client, waiting, monkeypatch):
    keep, drop = waiting
    superuser_client.post(TASKS, {"action": "revoke", "_selected_action": drop})
    before = TaskInstance.objects.count()
    run_all(superuser_client, urlencode({"q": "drop"}), "reenqueue", monkeypatch, batch_size=2)
    # Each revoked task got exactly one re-run; the re-runs (ids above the bound) were not re-run.
    assert TaskInstance.objects.count() == before + 5
    assert TaskInstance.objects.filter(identifier__endswith="-retry-1").count() == 5
    assert not TaskInstance.objects.filter(identifier__endswith="-retry-2").exists()


def test_delete_needs_the_delete_permission(changer_client, waiting):
    filters = urlencode({"q": "drop"})
    page = changer_client.get(BULK, {"filters": filters})
    assert "delete" not in dict(page.context["choices"])
    assert changer_client.get(BULK, {"filters": filters, "action": "delete"}).status_code == 403
    form = {"filters": filters, "action": "delete", "after": 0, "upto": 10**9}
    assert changer_client.post(BULK, form).status_code == 403
    assert TaskInstance.objects.count() == 12


def test_viewer_may_not_act(viewer_client, waiting):
    filters = urlencode({"q": "drop"})
    assert viewer_client.get(BULK, {"filters": filters}).context["choices"] == []
    form = {"filters": filters, "action": "revoke", "after": 0, "upto": 10**9}
    assert viewer_client.post(BULK, form).status_code == 403
    assert not TaskInstance.objects.filter(status=Status.REVOKED).exists()


def test_superuser_deletes_all_matching(superuser_client, waiting, monkeypatch):
    keep, _ = waiting
    run_all(superuser_client, urlencode({"q": "drop"}), "delete", monkeypatch, batch_size=3)
    assert set(TaskInstance.objects.values_list("pk", flat=True)) == set(keep)


def test_list_links_to_the_bulk_page_with_its_filters(superuser_client, waiting):
    page = superuser_client.get(TASKS, {"q": "drop"}).content.decode()
    assert 'id="atp-bulk-link"' in page and "filters=q%3Ddrop" in page
