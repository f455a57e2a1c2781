"""Jobs under a real atpd: a terminated or killed handler leaves no orphan program behind."""

import json
import os
import signal
import sys

import pytest

from atp import jobs, tracker
from atp.models import Status, TaskInstance
from tests.support.atpd_process import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

SLEEP = "import time; time.sleep(60)"


def _gone(pid) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _started(workdir) -> bool:
    try:
        return "pid" in json.loads((workdir / "_job.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False


@pytest.mark.parametrize(
    "how, type_options, expected",
    [
        ("revoke-terminate", {}, Status.REVOKED),
        ("hard-limit-sigkill", {"hard_time_limit": 1, "maxrestart": 0}, Status.FAILED),
    ],
)
def test_a_stopped_job_handler_leaves_no_orphan(daemons, tmp_path, how, type_options, expected):
    jobs.register_job_type("acc.long", sys.executable, ["-c", SLEEP], **type_options)
    task_id = tracker.enqueue_task("acc.long", "j1", {})
    proc = daemons.start("-n", "1", settings={"JOB_ROOT": str(tmp_path / "jobs")})
    workdir = tmp_path / "jobs" / "acc.long" / "j1"
    wait_until(lambda: _started(workdir), timeout=30, what="the job to start")
    pid = json.loads((workdir / "_job.json").read_text())["pid"]
    assert not _gone(pid)
    if how == "revoke-terminate":  # what atp.control's revoke(terminate=True) requests
        TaskInstance.objects.filter(pk=task_id).update(kill_signal=signal.SIGTERM)
    wait_until(
        lambda: TaskInstance.objects.get(pk=task_id).status == expected,
        timeout=30,
        what=f"the job to be {expected.label}",
    )
    wait_until(lambda: _gone(pid), timeout=10, what="the job's program to die")
    if how == "revoke-terminate":  # the SIGTERM handler closed the job's markers
        assert (workdir / ".done").exists()
    assert proc.poll() is None, daemons.output(proc)  # the daemon itself carries on
