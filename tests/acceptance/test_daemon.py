"""atpd as a real process: crashes, kills, time limits, signals, lost daemons and fencing."""

import json
import signal
import time
from collections import defaultdict

import pytest

from atp import tracker
from atp.models import LogRecord, Status, TaskInstance, Worker
from tests.support.atpd_process import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def count(status) -> int:
    return TaskInstance.objects.filter(status=status).count()


def attempts_from(log_path):
    """Read the record_attempt handler's file: {(task, attempt): {"start": t, "end": t, "pid"}}."""
    attempts = defaultdict(dict)
    with open(log_path) as log:
        for line in log:
            entry = json.loads(line)
            attempts[(entry["task"], entry["attempt"])][entry["event"]] = entry["t"]
            attempts[(entry["task"], entry["attempt"])]["pid"] = entry["pid"]
    return attempts


def assert_attempts_never_overlap(attempts, killed_at=None):
    """Each attempt of a task starts after the previous one ended (or its process died)."""
    by_task = defaultdict(list)
    for (task, number), times in attempts.items():
        by_task[task].append((number, times))
    for task, runs in by_task.items():
        runs.sort()
        for (_, earlier), (_, later) in zip(runs, runs[1:], strict=False):
            ended = earlier.get("end", killed_at)
            assert ended is not None, f"task {task}: an attempt never ended and nothing killed it"
            assert later["start"] >= ended, f"task {task}: two attempts ran at the same time"


@pytest.mark.slow  # run by make test-postgres only (see Makefile)
@pytest.mark.postgres
@pytest.mark.parametrize("parallel_recording", [True, False], ids=["recorder", "one-connection"])
def test_thousand_tasks_on_three_daemons_survive_one_killed(daemons, tmp_path, parallel_recording):
    log_path = tmp_path / "attempts.jsonl"
    tracker.register_task_type(
        "acc.record", "tests.support.handlers.record_attempt", max_queue_size=5000, maxrestart=3
    )
    for n in range(1000):
        tracker.enqueue_task("acc.record", f"t{n}", {"log": str(log_path), "seconds": 0.01})
    settings = {"PARALLEL_RECORDING": parallel_recording}
    procs = [daemons.start("-n", "2", settings=settings) for _ in range(3)]
    victim = procs[0]
    wait_until(lambda: count(Status.FINISHED) >= 200, what="200 tasks done")
    victim_tasks = TaskInstance.objects.filter(
        status=Status.RUNNING,
        server_id__in=Worker.objects.filter(pid=victim.pid).values("server_id"),
    )
    wait_until(victim_tasks.exists, what="the victim to be running a task")
    victim.kill()  # SIGKILL the daemon only: its children must die with it
    killed_at = time.time()
    victim.wait()

    wait_until(lambda: count(Status.FINISHED) == 1000, timeout=120, what="all tasks finished")
    assert TaskInstance.objects.exclude(status=Status.FINISHED).count() == 0
    succeeded = LogRecord.objects.filter(event="task-succeeded")
    assert succeeded.count() == 1000
    assert succeeded.values("instance").distinct().count() == 1000
    restarted = TaskInstance.objects.filter(attempts__gt=1)
    assert restarted.exists(), "the killed daemon's running tasks were restarted"
    assert LogRecord.objects.filter(event="task-retried", message__contains="lost").count() >= 1
    attempts = attempts_from(log_path)
    assert_attempts_never_overlap(attempts, killed_at=killed_at)
    for task, number in [key for key, times in attempts.items() if "end" not in times]:
        assert TaskInstance.objects.get(pk=task).attempts > number
    for proc in procs[1:]:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def process_gone(pid) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1].startswith("Z")  # a zombie is dead, unreaped
    except FileNotFoundError:
        return True


@pytest.mark.postgres
def test_handlers_die_with_their_killed_daemon_and_their_task_is_rerun(daemons, tmp_path):
    log_path = tmp_path / "attempts.jsonl"
    tracker.register_task_type("acc.record", "tests.support.handlers.record_attempt")
    task_id = tracker.enqueue_task("acc.record", "long", {"log": str(log_path), "seconds": 30})
    victim = daemons.start("-n", "1")
    wait_until(lambda: log_path.exists() and log_path.read_text(), what="the handler to start")
    child_pid = attempts_from(log_path)[(task_id, 1)]["pid"]
    victim.kill()
    victim.wait()
    wait_until(lambda: process_gone(child_pid), timeout=10, what="the orphaned handler to die")

    log_path.write_text("")
    tracker.register_task_type("acc.record", "tests.support.handlers.record_attempt")
    TaskInstance.objects.filter(pk=task_id).update(input={"log": str(log_path), "seconds": 0})
    rescuer = daemons.start("-n", "1")
    wait_until(
        lambda: TaskInstance.objects.get(pk=task_id).status == Status.FINISHED,
        what="the task to be recovered and run again",
    )
    task = TaskInstance.objects.get(pk=task_id)
    assert task.attempts == 2
    assert "lost: no heartbeat" in task.log.get(event="task-retried").message
    assert list(attempts_from(log_path)) == [(task_id, 2)]
    rescuer.send_signal(signal.SIGTERM)
    assert rescuer.wait(timeout=30) == 0


def test_a_hanging_handler_is_killed_at_its_timeout_and_fails_after_maxrestart(daemons):
    tracker.register_task_type("acc.hang", "tests.support.handlers.sleep", timeout=1, maxrestart=1)
    task_id = tracker.enqueue_task("acc.hang", "forever", {"seconds": 120})
    proc = daemons.start("--burst", "-n", "1")
    assert proc.wait(timeout=60) == 0, daemons.output(proc)
    task = TaskInstance.objects.get(pk=task_id)
    assert (task.status, task.attempts) == (Status.FAILED, 2)
    messages = list(task.log.values_list("message", flat=True))
    # Silent (no heartbeat) for longer than its timeout: killed as a zombie (issue 14.12).
    assert any("timeout of 1 s" in m and "Re-enqueued" in m for m in messages)
    assert "maxrestart" in messages[-1] and "silent for" in messages[-1]


def test_crashing_handlers_do_not_stop_the_daemon(daemons):
    tracker.register_task_type("acc.exit", "tests.support.handlers.exit_hard", maxrestart=0)
    tracker.register_task_type("acc.segv", "tests.support.handlers.segfault", maxrestart=1)
    tracker.register_task_type("acc.oom", "tests.support.handlers.oom_killed", maxrestart=0)
    tracker.register_task_type("acc.raise", "tests.support.handlers.fail")
    tracker.register_task_type("acc.noop", "tests.support.handlers.noop")
    exit_id = tracker.enqueue_task("acc.exit", "exit")
    segv_id = tracker.enqueue_task("acc.segv", "segv")
    oom_id = tracker.enqueue_task("acc.oom", "oom")
    raise_id = tracker.enqueue_task("acc.raise", "raise", {"why": "test"})
    noop_ids = [tracker.enqueue_task("acc.noop", f"ok{n}") for n in range(5)]
    proc = daemons.start("--burst", "-n", "2")
    assert proc.wait(timeout=60) == 0, daemons.output(proc)

    crashed = TaskInstance.objects.get(pk=exit_id)
    assert crashed.status == Status.FAILED
    assert "exited with code 1" in crashed.log.last().message
    segfaulted = TaskInstance.objects.get(pk=segv_id)
    assert (segfaulted.status, segfaulted.attempts) == (
        Status.FAILED,
        2,
    )  # one restart, then failed
    assert "killed by SIGSEGV" in segfaulted.log.last().message
    oom_killed = TaskInstance.objects.get(pk=oom_id)
    assert oom_killed.status == Status.FAILED
    assert "killed by SIGKILL" in oom_killed.log.last().message
    failed = TaskInstance.objects.get(pk=raise_id)
    assert failed.status == Status.FAILED
    failure = failed.log.get(event="task-failed")
    assert "RuntimeError" in failure.fields["exception"]
    assert "handler failed on purpose" in failure.fields["traceback"]
    assert set(TaskInstance.objects.filter(pk__in=noop_ids).values_list("status", flat=True)) == {
        Status.FINISHED
    }


def test_sigterm_lets_running_handlers_finish_and_exits_zero(daemons):
    tracker.register_task_type("acc.sleep", "tests.support.handlers.sleep")
    ids = [tracker.enqueue_task("acc.sleep", f"s{n}", {"seconds": 1.5}) for n in range(4)]
    proc = daemons.start("-n", "2")
    wait_until(lambda: count(Status.RUNNING) == 2, what="two running handlers")
    running = set(TaskInstance.objects.filter(status=Status.RUNNING).values_list("pk", flat=True))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, daemons.output(proc)

    statuses = dict(TaskInstance.objects.filter(pk__in=ids).values_list("pk", "status"))
    assert {statuses[pk] for pk in running} == {Status.FINISHED}
    assert {statuses[pk] for pk in set(ids) - running} == {Status.ACCEPTED}
    assert count(Status.SCHEDULED) == 0
    assert Worker.objects.get().stopped_at is not None


def test_second_signal_kills_handlers_and_requeues_their_tasks(daemons):
    tracker.register_task_type("acc.sleep", "tests.support.handlers.sleep")
    ids = [tracker.enqueue_task("acc.sleep", f"s{n}", {"seconds": 60}) for n in range(2)]
    proc = daemons.start("-n", "2")
    wait_until(lambda: count(Status.RUNNING) == 2, what="two running handlers")
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, daemons.output(proc)
    assert set(TaskInstance.objects.filter(pk__in=ids).values_list("status", flat=True)) == {
        Status.ACCEPTED
    }
    assert (
        LogRecord.objects.filter(event="task-retried", message__contains="cold stop").count() == 2
    )


@pytest.mark.postgres
def test_a_paused_daemon_cannot_overwrite_the_attempt_that_replaced_it(daemons, tmp_path):
    """SIGSTOP = a daemon presumed dead; after SIGCONT its late writes are refused (fencing).

    Only the daemon process is stopped, so its handler finishes attempt 1 and reports it;
    the woken daemon's write of that stale outcome must be refused.
    """
    log_path = tmp_path / "attempts.jsonl"
    tracker.register_task_type("acc.record", "tests.support.handlers.record_attempt", maxrestart=3)
    task_id = tracker.enqueue_task("acc.record", "slow", {"log": str(log_path), "seconds": 4})
    frozen = daemons.start("-n", "1")
    wait_until(lambda: count(Status.RUNNING) == 1, what="the task to run")
    frozen.send_signal(signal.SIGSTOP)
    try:
        rescuer = daemons.start("-n", "1")
        wait_until(
            lambda: TaskInstance.objects.get(pk=task_id).status == Status.FINISHED,
            timeout=60,
            what="the rescuer to finish the task",
        )
        wait_until(
            lambda: all("end" in times for times in attempts_from(log_path).values()),
            what="the frozen daemon's handler to finish attempt 1",
        )
    finally:
        frozen.send_signal(signal.SIGCONT)
    wait_until(lambda: "taken away" in daemons.output(frozen), what="the stale outcome refused")
    task = TaskInstance.objects.get(pk=task_id)
    assert (task.status, task.attempts) == (Status.FINISHED, 2)
    assert sorted(attempts_from(log_path)) == [(task_id, 1), (task_id, 2)]
    assert task.log.filter(event="task-succeeded").count() == 1
    assert task.server_id == Worker.objects.get(pid=rescuer.pid).server_id
    wait_until(lambda: "declared lost" in daemons.output(frozen), what="it to notice")
    for proc in (frozen, rescuer):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_cold_stop_with_prefetched_tasks_leaves_none_claimed(daemons):
    """Short handlers make the pool prefetch; a cold stop puts unstarted ones back too.

    Every 100th handler sleeps a minute: the short ones queued behind it in its child are
    still there when the stop comes (the warm stop waits for them, the cold one must not).
    """
    tracker.register_task_type("acc.short", "tests.support.handlers.sleep", max_queue_size=5000)
    items = [(f"s{n}", {"seconds": 60 if n % 100 == 50 else 0}) for n in range(1500)]
    tracker.enqueue_tasks("acc.short", items)
    proc = daemons.start("-n", "2")
    # The 50 tasks before the first sleeper are split between the children: 20 finish.
    wait_until(lambda: count(Status.FINISHED) >= 20, what="20 tasks done")
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, daemons.output(proc)
    assert count(Status.RUNNING) == count(Status.SCHEDULED) == 0
    assert count(Status.FINISHED) + count(Status.ACCEPTED) == 1500
    finished = TaskInstance.objects.filter(status=Status.FINISHED)
    assert LogRecord.objects.filter(instance__in=finished, event="task-succeeded").count() == (
        finished.count()
    )
    # Every task the daemon claimed and did not finish went back with a cold-stop record.
    requeued = TaskInstance.objects.filter(status=Status.ACCEPTED, attempts__gt=0)
    assert requeued.exists(), "the stop came too late to find prefetched tasks"
    assert (
        LogRecord.objects.filter(
            instance__in=requeued, event="task-retried", message__contains="cold stop"
        ).count()
        == requeued.count()
    )
