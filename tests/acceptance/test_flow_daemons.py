"""Flow control with real processes on PostgreSQL: concurrency per key, unique, pause.

Three ``manage.py atpd -n 3`` daemons claim concurrently; the handler
``record_attempt`` writes each task's start and end to a file, so overlaps are measured
where the work happens, not inferred from the database.
"""

import json
import time

import pytest
from django.db import transaction

from atp import control, tracker
from atp.models import LogRecord, Status, TaskInstance
from tests.integration.test_concurrency import _race
from tests.support.atpd_process import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


def _start_three(daemons, slots="3"):
    for _ in range(3):
        daemons.start("-n", slots)


def _intervals(log_path, task_ids) -> list[tuple[float, float]]:
    """Each task's handler (start, end) times, from the lines ``record_attempt`` wrote."""
    starts, ends = {}, {}
    for line in log_path.read_text().splitlines():
        entry = json.loads(line)
        (starts if entry["event"] == "start" else ends)[entry["task"]] = entry["t"]
    return [(starts[task_id], ends[task_id]) for task_id in task_ids]


def _most_at_once(intervals) -> int:
    """The largest number of intervals that overlap at one moment."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = most = 0
    for _, step in edges:  # at the same instant an end (-1) sorts before a start
        running += step
        most = max(most, running)
    return most


def _finished(ids) -> bool:
    return TaskInstance.objects.filter(pk__in=ids, status=Status.FINISHED).count() == len(ids)


@pytest.mark.parametrize("slots", ["3", "1"])
def test_a_key_never_runs_more_than_its_limit_across_daemons(daemons, tmp_path, slots):
    """With ``-n 1`` no daemon can run two tasks: the two places are on two daemons."""
    tracker.register_task_type(
        "flow.export", "tests.support.handlers.record_attempt", concurrency_limit=2
    )
    log = tmp_path / "runs.jsonl"
    work = {"log": str(log), "seconds": 0.15}
    hot = tracker.enqueue_tasks("flow.export", [(None, work)] * 30, concurrency_key="customer-1")
    other = tracker.enqueue_tasks("flow.export", [(None, work)] * 10, concurrency_key="customer-2")
    _start_three(daemons, slots)
    wait_until(lambda: _finished(hot + other), timeout=180, what="all 40 tasks to finish")
    hot_runs, other_runs = _intervals(log, hot), _intervals(log, other)
    assert _most_at_once(hot_runs) == 2  # never more than 2, and 2 did run at once
    assert _most_at_once(other_runs) == (2 if slots == "3" else 1)  # 3 slots in all with -n 1
    # The other key ran alongside: some of its tasks overlap the hot key's tasks.
    assert any(
        start < hot_end and hot_start < end
        for start, end in other_runs
        for hot_start, hot_end in hot_runs
    )
    if slots == "1":  # the limit was shared by daemons, not kept inside one
        servers = TaskInstance.objects.filter(pk__in=hot).values_list("server_id", flat=True)
        assert len(set(servers)) >= 2


def test_racing_enqueuers_of_one_unique_key_make_one_task(daemons):
    tracker.register_task_type("flow.sync", "tests.support.handlers.sleep")
    reports = _race([["unique", "flow.sync", "sync-42", "20"] for _ in range(8)])
    assert TaskInstance.objects.filter(type__identifier="flow.sync").count() == 1
    (task_id,) = TaskInstance.objects.values_list("pk", flat=True)
    assert {tuple(report["ids"]) for report in reports} == {(task_id,)}
    assert sum(report["created"] for report in reports) == 1
    # Once the task has ended, the next enqueue creates a new one.
    _start_three(daemons)
    wait_until(lambda: _finished([task_id]), timeout=60, what="the unique task to finish")
    new_id, created = tracker.enqueue_unique("flow.sync", unique_key="sync-42")
    assert created and new_id != task_id


def test_a_paused_queue_starts_nothing_until_resumed(daemons, tmp_path):
    tracker.register_task_type("flow.mail", "tests.support.handlers.record_attempt")
    log = tmp_path / "runs.jsonl"
    work = {"log": str(log), "seconds": 0.05}
    control.pause_queue("mail")  # before its first task exists
    held = tracker.enqueue_tasks("flow.mail", [(None, work)] * 10, queue="mail")
    free = tracker.enqueue_tasks("flow.mail", [(None, work)] * 10, queue="reports")
    _start_three(daemons)
    started = time.monotonic()
    wait_until(lambda: _finished(free), timeout=60, what="the other queue's 10 tasks")
    time.sleep(max(0.0, 3.0 - (time.monotonic() - started)))
    waiting = TaskInstance.objects.filter(pk__in=held)
    assert set(waiting.values_list("status", flat=True)) == {Status.ACCEPTED}
    assert not waiting.filter(started_at__isnull=False).exists()
    control.resume_queue("mail")
    wait_until(lambda: _finished(held), timeout=30, what="the resumed queue's 10 tasks")
    assert len(_intervals(log, held)) == 10


def _began(log_path) -> list[int]:
    """The tasks whose handler began, from the lines ``record_attempt`` wrote."""
    if not log_path.exists():
        return []
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    return [line["task"] for line in lines if line["event"] == "start"]


@pytest.mark.parametrize("pool", ["processes", "threads"])
def test_prefetched_tasks_of_a_queue_paused_meanwhile_never_start(daemons, tmp_path, pool):
    """A busy daemon obeys a pause at once: what it prefetched goes back, ACCEPTED.

    Two held handlers fill both slots; 20 tasks of queue ``mail`` and 40 of queue ``other``
    were claimed with them (prefetched: RUNNING, queued behind the held ones in the
    children's pipes or the threads' queue). Pausing ``mail`` gives its 20 back while the
    held handlers still run (the pool is still well stocked: the give-back is recorded at
    once all the same); they never start until the queue is resumed. ``other`` is not
    touched: its tasks stay claimed and run once the held handlers end.
    """
    tracker.register_task_type("flow.job", "tests.support.handlers.record_attempt")
    tracker.register_task_type("flow.noop", "tests.support.handlers.noop")
    log, release = tmp_path / "runs.jsonl", tmp_path / "release"
    daemons.start("-n", "2", "--pool", pool, settings={"PREFETCH": 32})
    # No-op handlers first: the pool learns handlers are short and prefetches 32 per slot.
    warm = tracker.enqueue_tasks("flow.noop", [(None, None)] * 60)
    wait_until(lambda: _finished(warm), timeout=60, what="the warm-up tasks")
    with transaction.atomic():  # one commit: the daemon claims them all in one batch
        held = tracker.enqueue_tasks(
            "flow.job", [(None, {"log": str(log), "until": str(release)})] * 2, priority=10
        )
        mail = tracker.enqueue_tasks("flow.job", [(None, {"log": str(log)})] * 20, queue="mail")
        other = tracker.enqueue_tasks("flow.job", [(None, {"log": str(log)})] * 40, queue="other")
    waiting = TaskInstance.objects.filter(pk__in=mail)
    others = TaskInstance.objects.filter(pk__in=other)
    wait_until(lambda: set(_began(log)) >= set(held), timeout=30, what="the held handlers")
    wait_until(
        lambda: (
            waiting.filter(status=Status.RUNNING).count() == 20
            and others.filter(status=Status.RUNNING).count() == 40
        ),
        timeout=30,
        what="the mail and other tasks to be claimed with them",
    )
    assert not set(_began(log)) & set(mail + other)  # prefetched: RUNNING, not begun
    control.pause_queue("mail")
    wait_until(
        lambda: waiting.filter(status=Status.ACCEPTED).count() == 20,
        timeout=30,
        what="the prefetched mail tasks to be given back",
    )
    running = TaskInstance.objects.filter(pk__in=held)
    assert set(running.values_list("status", flat=True)) == {Status.RUNNING}  # still held
    assert set(others.values_list("status", flat=True)) == {Status.RUNNING}  # not paused
    assert set(waiting.values_list("attempts", flat=True)) == {0}  # no attempt used
    for task_id in mail:
        events_after_claim = list(
            LogRecord.objects.filter(instance_id=task_id)
            .order_by("id")
            .values_list("event", "fields__reason")
        )[-2:]
        assert events_after_claim == [("task-retried", None), ("task-pending", "queue")]
    release.touch()
    wait_until(lambda: _finished(held + other), timeout=30, what="the held and other tasks")
    time.sleep(1.0)  # five poll intervals of a daemon with free slots: nothing of mail starts
    assert set(waiting.values_list("status", flat=True)) == {Status.ACCEPTED}
    assert not set(_began(log)) & set(mail)
    control.resume_queue("mail")
    wait_until(lambda: _finished(mail), timeout=60, what="the resumed mail tasks")
    began = _began(log)
    assert sorted(task_id for task_id in began if task_id in set(mail)) == sorted(mail)
