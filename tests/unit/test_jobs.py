"""Subprocess jobs run in-process: files, exit codes, responses, time limit, no shell."""

import json
import os
import sys
import uuid

import pytest
from django.test import override_settings

from atp import jobs, tracker
from atp.models import Status, TaskInstance
from tests.support.helpers import run_task

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


# --- the work directory stays inside JOB_ROOT/<type>/ (issue 14.5) -----------------------

TOUCH = "open('_mark', 'w').write('x')"


@pytest.mark.parametrize(
    "identifier",
    [
        "../../escaped",  # JOB_ROOT/job.touch/../../escaped is the test's tmp_path/escaped
        "../../../../../../../..{outside}",
        "..",
        ".",
        "{outside}",  # an absolute path
        "..\\..\\windows",
        "%2E%2E",
        "é" * 64,
        ".hidden",
    ],
)
def test_every_identifier_gets_one_directory_inside_its_types_directory(
    job_root, tmp_path, identifier
):
    # A fresh absolute path outside the test's directory: nothing may appear there.
    outside = f"/tmp/atp-escape-{uuid.uuid4().hex[:8]}"  # noqa: S108 - must stay absent
    identifier = identifier.replace("{outside}", outside)
    jobs.register_job_type("job.touch", sys.executable, ["-c", TOUCH])
    task = _run("job.touch", {}, identifier=identifier)
    assert task.status == Status.FINISHED
    type_dir = (job_root / "job.touch").resolve()
    [workdir] = type_dir.iterdir()  # exactly one directory, a child of the type's
    assert workdir.is_dir() and not workdir.is_symlink()
    assert workdir.name not in (".", "..") and not workdir.name.startswith(".")
    assert (workdir / "_mark").exists() and (workdir / ".done").exists()
    assert workdir == jobs.job_dir("job.touch", identifier)
    record = json.loads((workdir / "_job.json").read_text())
    assert (record["identifier"], record["cwd"]) == (identifier, str(workdir))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["jobs"]  # nothing escaped
    assert not os.path.exists(outside)


def test_distinct_identifiers_never_share_a_directory():
    names = ["a/b", "a%2Fb", "a\\b", "..", "%2E.", ".", "%2E", "x" * 64, "x" * 63 + "y"]
    names += ["é" * 64, "é" * 63 + "è", "nul\x00byte", "nul%00byte", "\ud800"]
    parts = [jobs.path_part(name) for name in names]
    assert len(set(parts)) == len(names)
    assert all(len(part) <= jobs.NAME_MAX for part in parts)
    assert not any(set(part) & {"/", "\\", "\x00"} or part.startswith(".") for part in parts)


def test_the_type_part_is_encoded_too(job_root):
    jobs.register_job_type("../evil", sys.executable, ["-c", TOUCH])
    task = _run("../evil", {})
    assert task.status == Status.FINISHED
    [type_dir] = job_root.iterdir()
    assert type_dir.name == "%2E.%2Fevil"
    assert (type_dir / "j1" / "_mark").exists()


@pytest.mark.parametrize("planted", ["type", "identifier", "dangling"])
def test_a_symlink_planted_in_job_root_is_refused(job_root, tmp_path, planted):
    outside = tmp_path / "outside"
    outside.mkdir()
    jobs.register_job_type("job.touch", sys.executable, ["-c", TOUCH])
    (job_root / "job.touch").mkdir(parents=True)
    if planted == "type":
        (job_root / "job.touch").rmdir()
        (job_root / "job.touch").symlink_to(outside, target_is_directory=True)
    elif planted == "identifier":
        (job_root / "job.touch" / "j1").symlink_to(outside, target_is_directory=True)
    else:
        (job_root / "job.touch" / "j1").symlink_to(tmp_path / "nowhere")
    task = _run("job.touch", {})
    assert task.status == Status.FAILED
    failed = task.log.get(event="task-failed")
    assert "UnsafeJobDirectory" in failed.fields["exception"]
    assert list(outside.iterdir()) == []  # nothing created or written through the link
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize(
    ("program", "code"),
    [("/nonexistent/program", jobs.NOT_FOUND), ("/etc/hostname", jobs.NOT_EXECUTABLE)],
)
def test_a_program_that_cannot_start_fails_with_its_exit_status_and_no_running_marker(
    job_root, program, code
):
    jobs.register_job_type("job.missing", program, [])
    task = _run("job.missing", {})
    assert task.status == Status.FAILED
    assert f"exit code {code}" in task.log.get(event="task-failed").message
    workdir = job_root / "job.missing" / "j1"
    assert not (workdir / ".running").exists() and (workdir / ".done").exists()
    record = json.loads((workdir / "_job.json").read_text())
    assert record["exit_code"] == code and record["ended_at"] >= record["started_at"]
    assert "could not be started" in (workdir / "_stderr.txt").read_text()


def test_a_long_job_heartbeats_so_its_timeout_counts_silence_only(job_root, monkeypatch):
    beats = []
    real = tracker.heartbeat
    monkeypatch.setattr(tracker, "heartbeat", lambda *a, **k: (beats.append(1), real(*a, **k)))
    jobs.register_job_type(
        "job.long", sys.executable, ["-c", "import time; time.sleep(1.2)"], timeout=0.6
    )
    task_id = tracker.enqueue_task("job.long", "j1", {})
    assert tracker.dequeue_task("s") == [task_id]
    with override_settings(ATP={"JOB_ROOT": str(job_root), "HEARTBEAT_INTERVAL": 0.1}):
        run_task(task_id, "s")
    assert TaskInstance.objects.get(pk=task_id).status == Status.FINISHED
    assert len(beats) >= 3  # every 0.2 s (a third of the timeout, at least 0.2 s)
