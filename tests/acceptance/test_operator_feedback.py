"""What operators read (issue 14.16): a warm stop says what it waits for; ``make run``'s
commands explain the example failures and where to look next."""

import io
import signal

import pytest
from django.core.management import call_command

from atp import tracker
from atp.models import Status, TaskInstance
from tests.support.atpd_process import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_warm_stop_logs_that_it_began_and_what_it_waits_for(daemons):
    tracker.register_task_type("acc.sleep", "tests.support.handlers.sleep")
    task_id = tracker.enqueue_task("acc.sleep", "slow", {"seconds": 3})
    proc = daemons.start("-n", "1")
    wait_until(
        lambda: TaskInstance.objects.get(pk=task_id).status == Status.RUNNING,
        what="the handler to start",
    )
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    output = daemons.output(proc)
    assert (
        f"Warm stop: claiming nothing more; waiting for 1 running handler(s) "
        f"(acc.sleep::slow (id {task_id}))" in output
    ), output
    assert output.index("Warm stop") < output.index("Finished in") < output.index("atpd stopped")
    assert TaskInstance.objects.get(pk=task_id).status == Status.FINISHED


def test_make_runs_commands_explain_the_intended_failures_and_where_to_look(daemons):
    examples = io.StringIO()
    call_command("atp_examples", stdout=examples)
    assert "2 example.fail task(s) will end FAILED on purpose" in examples.getvalue()
    proc = daemons.start("--burst", "-n", "2")
    assert proc.wait(timeout=120) == 0, daemons.output(proc)
    status = io.StringIO()
    call_command("atp_status", stdout=status)
    lines = status.getvalue().splitlines()
    assert "FAILED     2" in lines
    assert (
        "2 FAILED example.fail: intended (its handler always raises, to show how a failure "
        "is recorded)." in lines
    )
    assert (
        "  admin: http://127.0.0.1:8000/admin/atp/taskinstance/?status__exact=6 "
        "(python manage.py runserver first)" in lines
    )
    assert any("README.md" in line for line in lines)


def test_atp_status_says_nothing_more_without_failures(db):
    out = io.StringIO()
    call_command("atp_status", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines == [f"{status.label:<10} 0" for status in Status]  # the counts, nothing more
