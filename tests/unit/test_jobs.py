"""Subprocess jobs run in-process: files, exit codes, responses, time limit, no shell."""

import json
import os
import sys

import pytest
from django.test import override_settings

from atp import jobs, tracker
from atp.daemon.runner import run_task
from atp.models import Status, TaskInstance

pytestmark = pytest.mark.django_db

PRINT_ARGS = "import sys; print('\\n'.join(sys.argv[1:]))"


@pytest.fixture(autouse=True)
def job_root(tmp_path):
    with override_settings(ATP={"JOB_ROOT": str(tmp_path / "jobs")}):
        yield tmp_path / "jobs"


def _run(type_identifier, task_input, identifier="j1"):
    task_id = tracker.enqueue_task(type_identifier, identifier, task_input)
    assert tracker.dequeue_task("s") == [task_id]
    run_task(task_id, "s")
    return TaskInstance.objects.get(pk=task_id)


def test_a_successful_job_leaves_its_files_and_returns_stdout(job_root):
    jobs.register_job_type("job.echo", sys.executable, ["-c", PRINT_ARGS, "{word}"])
    task = _run("job.echo", {"word": "hello"})
    assert task.status == Status.FINISHED
    workdir = job_root / "job.echo" / "j1"
    assert (workdir / ".done").exists() and not (workdir / ".running").exists()
    record = json.loads((workdir / "_job.json").read_text())
    assert record["exit_code"] == 0 and record["argv"][-1] == "hello"
    assert record["ended_at"] >= record["started_at"]
    assert tracker.get_task_response("job.echo", "j1") == (b"hello\n", "text/plain")
    assert (workdir / "_stdout.txt").read_text() == "hello\n"


def test_a_non_zero_exit_fails_the_job_with_the_code_and_the_stderr_tail():
    program = "import sys; sys.stderr.write('disk on fire\\n'); sys.exit(3)"
    jobs.register_job_type("job.bad", sys.executable, ["-c", program])
    task = _run("job.bad", {})
    assert task.status == Status.FAILED
    message = task.log.latest("id").message
    assert "exit code 3" in message and "disk on fire" in message


def test_input_cannot_inject_shell_commands(job_root, tmp_path):
    victim = tmp_path / "keep-me"
    victim.write_text("x")
    jobs.register_job_type("job.echo", sys.executable, ["-c", PRINT_ARGS, "{a}", "{b}"])
    evil = {"a": f"; rm -rf {victim}", "b": "$(touch pwned)`touch pwned2`"}
    task = _run("job.echo", evil)
    assert task.status == Status.FINISHED
    stdout = tracker.get_task_response("job.echo", "j1")[0].decode()
    assert stdout == f"{evil['a']}\n{evil['b']}\n"  # passed literally, one argument each
    assert victim.exists()
    assert not list((job_root / "job.echo" / "j1").glob("pwned*"))


def test_a_declared_output_file_is_the_response_with_its_mime_type():
    program = "import json; open('result.json', 'w').write(json.dumps(dict(n=42)))"
    jobs.register_job_type("job.out", sys.executable, ["-c", program], output="result.json")
    task = _run("job.out", {})
    assert task.status == Status.FINISHED
    assert tracker.get_task_response("job.out", "j1") == (b'{"n": 42}', "application/json")


def test_the_soft_time_limit_stops_the_whole_group(job_root):
    # The program ignores SIGTERM, so only the SIGKILL after the grace period stops it.
    program = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    jobs.register_job_type(
        "job.slow", sys.executable, ["-c", program], grace=0.3, soft_time_limit=0.5
    )
    task = _run("job.slow", {})
    assert task.status == Status.FAILED
    assert "soft time limit" in task.log.latest("id").message
    workdir = job_root / "job.slow" / "j1"
    record = json.loads((workdir / "_job.json").read_text())
    assert record["timed_out"] and record["exit_code"] == -9
    with pytest.raises(ProcessLookupError):
        os.kill(record["pid"], 0)
    assert "soft time limit" in (workdir / "_stderr.txt").read_text()


def test_a_missing_template_key_fails_the_job_clearly():
    jobs.register_job_type("job.echo", sys.executable, ["-c", PRINT_ARGS, "{word}"])
    task = _run("job.echo", {})
    assert task.status == Status.FAILED
    assert "argument template" in task.log.latest("id").message


def test_args_must_be_a_list_of_strings():
    with pytest.raises(tracker.InvalidInput):
        jobs.register_job_type("job.x", "/bin/echo", "hello; rm -rf /")
