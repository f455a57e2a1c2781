"""No text a task produces can stop atpd (issue 14.1): NUL and lone surrogates are stored.

PostgreSQL refuses NUL in text and JSON, and no database encodes a lone surrogate; both
errors used to end the daemon with the task left RUNNING. Real daemons, both databases.
"""

import sys

import pytest

from atp import jobs, tracker
from atp.models import Status, TaskInstance
from tests.support.atpd_process import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

HANDLERS = "tests.support.handlers"


def _ended(task_id) -> TaskInstance:
    wait_until(
        lambda: (
            TaskInstance.objects.get(pk=task_id).status
            in (Status.FINISHED, Status.FAILED, Status.REVOKED)
        ),
        timeout=60,
        what=f"task {task_id} to end",
    )
    return TaskInstance.objects.get(pk=task_id)


def test_nul_and_surrogates_from_handlers_fail_their_task_and_the_daemon_serves_on(
    daemons, tmp_path
):
    tracker.register_task_type("acc.nul", f"{HANDLERS}.raise_nul", maxrestart=0)
    tracker.register_task_type("acc.surrogate", f"{HANDLERS}.raise_surrogate", maxrestart=0)
    tracker.register_task_type("acc.everywhere", f"{HANDLERS}.unstorable_everywhere")
    tracker.register_task_type("acc.noop", f"{HANDLERS}.noop")
    program = "import sys; sys.stderr.write('disk\\x00on fire'); sys.exit(3)"
    jobs.register_job_type("acc.nuljob", sys.executable, ["-c", program], maxrestart=0)
    proc = daemons.start("-n", "1", settings={"JOB_ROOT": str(tmp_path / "jobs")})

    nul = _ended(tracker.enqueue_task("acc.nul", "nul"))
    assert nul.status == Status.FAILED, daemons.output(proc)
    failed = nul.log.get(event="task-failed")
    assert failed.message == "bad\\x00byte"  # readable: the NUL written as an escape
    assert failed.fields["exception"] == "builtins.ValueError: bad\\x00byte"
    assert "bad\\x00byte" in failed.fields["traceback"]

    surrogate = _ended(tracker.enqueue_task("acc.surrogate", "surrogate"))
    assert surrogate.status == Status.FAILED, daemons.output(proc)
    assert surrogate.log.get(event="task-failed").message == "bad\\ud800byte"

    job = _ended(tracker.enqueue_task("acc.nuljob", "job"))
    assert job.status == Status.FAILED, daemons.output(proc)
    message = job.log.get(event="task-failed").message
    assert "exit code 3" in message and "disk\\x00on fire" in message

    everywhere = _ended(tracker.enqueue_task("acc.everywhere", "all"))
    assert everywhere.status == Status.FINISHED, daemons.output(proc)
    assert everywhere.progress["message"] == "half\\x00way \\ud800"
    progress = everywhere.log.get(event="task-progress")
    assert progress.message == "half\\x00way \\ud800"
    assert everywhere.log.get(event="task-succeeded").fields["result"] == ("result\\x00repr\\udcff")
    assert tracker.get_task_response("acc.everywhere", "all") == (b"ok", "text/plain; x=\\x00")

    after = _ended(tracker.enqueue_task("acc.noop", "after"))
    assert after.status == Status.FINISHED
    assert proc.poll() is None, daemons.output(proc)  # still serving
