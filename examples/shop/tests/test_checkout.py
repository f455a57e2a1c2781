"""The shop's tests: eager mode, drain(), and one real daemon run from a clean database."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from shop.services import checkout
from shop.tasks import charge, reserve

from atp.daemon.db import database_url
from atp.models import TaskInstance, TaskType
from atp.testing import EagerTaskFailed

LINES = [{"sku": "tea", "quantity": 2}, {"sku": "cup", "quantity": 1}]
EXAMPLE = Path(__file__).resolve().parent.parent


@pytest.mark.django_db(transaction=True)
def test_checkout_runs_every_task_when_its_transaction_commits(atp_eager):
    handles = checkout("A-1", "ann@example.com", LINES, amount_cents=1250)

    assert {name: handle.status for name, handle in handles.items()} == {
        "order": "SUCCESS",
        "charge": "SUCCESS",
        "mail": "SUCCESS",
    }
    assert handles["order"].result == {"order": "A-1", "lines": 2}
    assert handles["mail"].wait(timeout=1) == "order A-1 confirmed to ann@example.com"
    reserved = TaskInstance.objects.filter(type__identifier=reserve.name)
    assert sorted(task.result["sku"] for task in reserved) == ["cup", "tea"]
    assert set(reserved.values_list("status", flat=True)) == {5}  # all FINISHED


@pytest.mark.django_db
def test_drain_runs_what_was_enqueued_and_what_it_enqueued(atp_drain):
    handles = checkout("B-2", "bob@example.com", LINES, amount_cents=990)
    assert handles["order"].status == "PENDING"

    ran = atp_drain()

    # charge first (priority 10), then the order, whose two reservations run after the mail.
    assert ran[:3] == [handles["charge"].id, handles["order"].id, handles["mail"].id]
    assert len(ran) == 5
    assert handles["charge"].result == 990
    assert atp_drain() == []  # nothing left


@pytest.mark.django_db
def test_a_failing_task_is_stored_not_raised(atp_eager):
    handle = charge.enqueue("C-3", 0)

    assert handle.status == "FAILURE"
    assert handle.result is None


@pytest.mark.django_db
def test_eager_propagate_raises_the_handlers_error(atp_eager, settings):
    settings.ATP = {**settings.ATP, "EAGER_PROPAGATE": True}

    with pytest.raises(EagerTaskFailed, match="nothing to charge") as raised:
        charge.enqueue("D-4", 0)

    assert isinstance(raised.value.__cause__, ValueError)
    assert TaskInstance.objects.get(type__identifier=charge.name).status == 6  # FAILED


@pytest.mark.django_db(transaction=True)
def test_a_daemon_runs_the_shop_from_a_clean_database():
    env = {**os.environ, "DATABASE_URL": database_url()}
    atpd = [sys.executable, "manage.py", "atpd", "--burst", "-n", "2"]

    # Nothing enqueued yet: the daemon's start-up alone creates the shop's task types.
    assert not TaskType.objects.exists()
    subprocess.run(atpd, cwd=EXAMPLE, env=env, check=True, capture_output=True, timeout=120)
    assert set(TaskType.objects.values_list("identifier", flat=True)) >= {
        "shop.tasks.reserve",
        "shop.tasks.place_order",
        "shop.tasks.send_confirmation",
        "shop.tasks.charge",
    }

    handles = checkout("E-5", "eve@example.com", LINES, amount_cents=500)
    subprocess.run(atpd, cwd=EXAMPLE, env=env, check=True, capture_output=True, timeout=120)

    assert handles["order"].result == {"order": "E-5", "lines": 2}
    assert handles["mail"].result == "order E-5 confirmed to eve@example.com"
    assert TaskInstance.objects.filter(status=5).count() == 5
