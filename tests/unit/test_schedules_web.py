"""The schedules in the admin and the JSON API."""

import base64

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from atp import schedules
from atp.models import Schedule, TaskInstance
from tests.support.admin_fixtures import ADMIN

pytestmark = pytest.mark.django_db
SCHEDULES = ADMIN + "schedule/"
API = "/atp/api/"


@pytest.fixture
def nightly(task_type):
    return schedules.register_schedule(
        "nightly", task_type.identifier, cron="30 2 * * *", timezone="Europe/Berlin"
    )


def form(task_type, **changes):
    data = {
        "name": "new",
        "task_type": str(task_type.pk),
        "cron": "",
        "every": "",
        "timezone": "UTC",
        "input": "null",
        "enabled": "on",
        "catch_up": "one",
        "options": "{}",
    }
    data.update(changes)
    return {key: value for key, value in data.items() if value is not None}


# --- admin --------------------------------------------------------------------------------


def test_the_list_shows_next_and_last_run_with_its_status(superuser_client, nightly):
    task_id = schedules.run_now("nightly")
    page = superuser_client.get(SCHEDULES).content.decode()
    assert "nightly" in page and "cron &#x27;30 2 * * *&#x27; in Europe/Berlin" in page
    assert TaskInstance.objects.get(pk=task_id).identifier in page
    assert "atp-status-accepted" in page
    assert f"{nightly.next_slot:%Y}" in page


def test_the_change_page_shows_the_next_five_runs_and_recent_runs(superuser_client, nightly):
    schedules.run_now("nightly")
    page = superuser_client.get(f"{SCHEDULES}{nightly.pk}/change/").content.decode()
    for slot in schedules.next_runs("nightly", count=5):
        assert f"{slot:%Y-%m-%d %H:%M:%S} UTC" in page
    assert "nightly@now-" in page
    assert "Run now" in page


def test_adding_through_the_admin_registers_a_schedule(superuser_client, task_type):
    reply = superuser_client.post(SCHEDULES + "add/", form(task_type, every="60"))
    assert reply.status_code == 302, reply.content.decode()
    schedule = Schedule.objects.get(name="new")
    assert (schedule.every, schedule.source, schedule.next_slot is not None) == (60, "code", True)


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"cron": "61 * * * *"}, "cron", "malformed"),
        ({"cron": "@daily", "timezone": "Mars/Base"}, "timezone", "not a known IANA time zone"),
        ({}, "cron", "give exactly one of cron and every"),
        ({"every": "60", "options": '{"run_after": 5}'}, "options", "unknown option"),
        ({"every": "60", "name": "a b"}, "name", "letters, digits"),
    ],
)
def test_bad_cron_or_time_zone_is_a_form_error(
    superuser_client, task_type, changes, field, message
):
    reply = superuser_client.post(SCHEDULES + "add/", form(task_type, **changes))
    assert reply.status_code == 200
    errors = reply.context["adminform"].form.errors
    assert message in " ".join(errors.get(field, [])), errors
    assert not Schedule.objects.exists()


def test_enable_disable_and_run_now_actions(superuser_client, nightly):
    def act(name):
        return superuser_client.post(
            SCHEDULES, {"action": name, "_selected_action": [str(nightly.pk)]}, follow=True
        )

    act("disable")
    assert Schedule.objects.get().enabled is False
    act("enable")
    assert Schedule.objects.get().enabled is True
    act("run_now")
    assert TaskInstance.objects.filter(identifier__startswith="nightly@now-").count() == 1


def test_viewers_cannot_act(viewer_client, nightly):
    viewer_client.post(SCHEDULES, {"action": "disable", "_selected_action": [str(nightly.pk)]})
    assert Schedule.objects.get().enabled is True


# --- API ----------------------------------------------------------------------------------


def user_client(*codenames) -> Client:
    user = User.objects.create_user("u-" + "-".join(codenames) or "nobody")
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def test_get_schedules(nightly):
    schedules.run_now("nightly")
    body = user_client("view_schedule").get(API + "schedules").json()
    item = body["nightly"]
    assert item["task"] == nightly.task_type.identifier
    assert (item["cron"], item["every"], item["timezone"]) == ("30 2 * * *", None, "Europe/Berlin")
    assert item["next_run"] == nightly.next_slot.timestamp()
    assert item["last_run"]["state"] == "ACCEPTED"
    assert item["last_run"]["identifier"].startswith("nightly@now-")


def test_pause_and_resume_over_http(nightly):
    client = user_client("change_schedule")
    reply = client.post(API + "schedule/pause/nightly")
    assert reply.status_code == 200 and reply.json()["enabled"] is False
    assert Schedule.objects.get().enabled is False
    reply = client.post(API + "schedule/resume/nightly")
    assert reply.status_code == 200 and Schedule.objects.get().enabled is True
    assert client.post(API + "schedule/pause/ghost").status_code == 404


def test_the_api_permission_rules(nightly, client):
    assert client.get(API + "schedules").status_code == 401
    assert client.post(API + "schedule/pause/nightly").status_code == 401
    reader = user_client("view_schedule")
    assert reader.post(API + "schedule/pause/nightly").status_code == 403
    assert user_client("view_taskinstance").get(API + "schedules").status_code == 403
    assert reader.get(API + "schedule/pause/nightly").status_code == 405
    assert Schedule.objects.get().enabled is True


def test_basic_auth_scripts_need_no_csrf_token(nightly, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    user = User.objects.create_user("ops", password="secret")
    user.user_permissions.set(Permission.objects.filter(codename="change_schedule"))
    token = base64.b64encode(b"ops:secret").decode()
    reply = Client(enforce_csrf_checks=True).post(
        API + "schedule/pause/nightly", HTTP_AUTHORIZATION=f"Basic {token}"
    )
    assert reply.status_code == 200
    assert Schedule.objects.get().enabled is False
