"""Users and clients for the admin tests: superuser, staff who may only view, anonymous."""

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

ADMIN = "/admin/atp/"
TASKS = ADMIN + "taskinstance/"
DASHBOARD = TASKS + "dashboard/"


def _client(user=None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


@pytest.fixture
def superuser_client(db):
    """A logged-in superuser."""
    return _client(User.objects.create_superuser("root", "root@example.org", "pw"))


@pytest.fixture
def viewer_client(db):
    """A logged-in staff user with only the ``view_*`` permissions of ATP's models."""
    user = User.objects.create_user("viewer", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="atp", codename__startswith="view_")
    )
    return _client(user)


@pytest.fixture
def changer_client(db):
    """Staff who may view and change tasks, but not delete them."""
    user = User.objects.create_user("changer", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="atp", codename__in=["view_taskinstance", "change_taskinstance"]
        )
    )
    return _client(user)


@pytest.fixture
def anonymous_client(db):
    """Nobody logged in."""
    return _client()


def action(client, name, *task_ids, follow=True, **extra):
    """Run a change-list action on tasks, as the action form does."""
    return client.post(
        TASKS,
        {"action": name, "_selected_action": [str(task_id) for task_id in task_ids], **extra},
        follow=follow,
    )


def messages_of(response) -> list[str]:
    """The admin messages a (followed) response shows."""
    return [str(message) for message in response.context["messages"]]
