"""The pools on their own: prefetch depth, crashes and kills with attempts queued behind.

No database: the attempts' handlers (tests.support.handlers) never touch it, so these run the real
child processes and threads without a daemon around them.
"""

import json
import time

import pytest

from atp.daemon.asyncio_pool import AsyncioPool
from atp.daemon.pool import PREFETCH_HORIZON, Crashed, Finished, ProcessPool
from atp.daemon.runner import Outcome
from atp.daemon.thread_pool import ThreadPool
from atp.tracker import Attempt


def attempt(task_id, handler="noop", input=None, number=1) -> Attempt:
    return Attempt(
        task_id=task_id,
        number=number,
        type="test.pool",
        identifier=f"t{task_id}",
        handler=f"tests.support.handlers.{handler}",
        input=input,
        soft_time_limit=None,
        hard_time_limit=None,
        timeout=60.0,
    )


def collect_until(pool, count, timeout=30.0) -> list:
    """Collect reports until ``count`` arrived (or fail after ``timeout`` seconds)."""
    reports = []
    deadline = time.monotonic() + timeout
    while len(reports) < count:
        assert time.monotonic() < deadline, f"only {len(reports)} of {count} reports: {reports}"
        reports += pool.collect()
        time.sleep(0.01)
    return reports


def fast(pool):
    """Make the pool believe its handlers are short, as after a run of no-op tasks."""
    pool.mean_runtime = PREFETCH_HORIZON / 1000
    return pool


@pytest.fixture
def process_pool(settings):
    settings.ATP = {"PREFETCH": 8}
    pool = ProcessPool(1)
    yield pool
    pool.stop(timeout=2)


@pytest.fixture
def thread_pool(settings):
    settings.ATP = {"PREFETCH": 8}
    pool = ThreadPool(2)
    yield pool
    pool.stop(timeout=2)


def test_depth_follows_handler_run_time(settings):
    settings.ATP = {"PREFETCH": 8}
    pool = ThreadPool(2)
    try:
        assert pool.depth == 1 and pool.free() == 2  # nothing known yet: no prefetch
        pool.mean_runtime = PREFETCH_HORIZON * 2  # slow handlers: one attempt per slot
        assert pool.depth == 1
        pool.mean_runtime = PREFETCH_HORIZON / 4
        assert pool.depth == 4 and pool.free() == 8
        fast(pool)
        assert pool.depth == 8  # capped by ATP['PREFETCH']
        settings.ATP = {"PREFETCH": 1}
        assert pool.depth == 1  # prefetch off
    finally:
        pool.stop(timeout=2)


def test_asyncio_depth_is_two_under_a_second_and_more_for_very_short_handlers(settings):
    settings.ATP = {"PREFETCH": 8}
    pool = AsyncioPool(2)
    try:
        assert pool.depth == 1  # nothing known yet
        pool.mean_runtime = 0.5
        assert pool.depth == 2  # a waiting coroutine costs nothing: one claim per two
        fast(pool)
        assert pool.depth == 8 and pool.free() == 16  # capped by ATP['PREFETCH']
        pool.mean_runtime = 1.5
        assert pool.depth == 1  # long handlers: no task waits RUNNING behind one
        settings.ATP = {"PREFETCH": 1}
        fast(pool)
        assert pool.depth == 1  # prefetch off
    finally:
        pool.stop(timeout=2)


def test_running_average_of_reported_run_times():
    pool = ThreadPool(1)
    try:
        pool.held = 2
        pool._reported(Outcome(1, 1, True, runtime=1.0))
        assert pool.mean_runtime == 1.0
        pool._reported(Outcome(2, 1, True, runtime=0.0))
        assert pool.mean_runtime == pytest.approx(0.8)
        assert pool.held == 0
    finally:
        pool.stop(timeout=2)


def test_a_child_runs_its_queue_in_order(process_pool):
    fast(process_pool)
    for task_id in range(1, 7):
        process_pool.submit(attempt(task_id))
    assert len(process_pool.slots[0].queue) == 6  # all sent ahead to the one child
    reports = collect_until(process_pool, 6)
    assert [report.attempt.task_id for report in reports] == [1, 2, 3, 4, 5, 6]
    assert all(isinstance(report, Finished) and report.outcome.succeeded for report in reports)
    assert not process_pool.busy()


def test_a_crash_fails_only_the_running_attempt_and_the_queue_moves_on(process_pool):
    fast(process_pool)
    handlers = ["noop", "noop", "exit_hard", "noop", "noop"]
    for task_id, handler in enumerate(handlers, start=1):
        process_pool.submit(attempt(task_id, handler))
    reports = collect_until(process_pool, 5)
    by_task = {report.attempt.task_id: report for report in reports}
    assert sorted(by_task) == [1, 2, 3, 4, 5]  # each reported exactly once
    assert isinstance(by_task[3], Crashed) and by_task[3].kill_reason == ""
    assert by_task[3].reason == "exited with code 1"
    assert all(isinstance(by_task[n], Finished) for n in (1, 2, 4, 5))  # run by the new child


def test_a_kill_hits_the_running_attempt_only(process_pool):
    fast(process_pool)
    process_pool.submit(attempt(1, "sleep", {"seconds": 30}))
    process_pool.submit(attempt(2))
    process_pool.submit(attempt(3))
    assert process_pool.kill(2, 9, "revoked") is False  # queued, not running: not killable
    assert process_pool.kill(1, 9, "revoked") is True
    reports = collect_until(process_pool, 3)
    assert isinstance(reports[0], Crashed) and reports[0].attempt.task_id == 1
    assert reports[0].kill_reason == "revoked" and reports[0].kill_signal == 9
    assert [(type(r), r.attempt.task_id) for r in reports[1:]] == [(Finished, 2), (Finished, 3)]


def test_withdraw_takes_back_what_has_not_started(process_pool):
    fast(process_pool)
    process_pool.submit(attempt(1, "sleep", {"seconds": 30}))
    for task_id in (2, 3, 4):
        process_pool.submit(attempt(task_id))
    withdrawn = process_pool.withdraw("cold stop")
    assert [a.task_id for a in withdrawn] == [2, 3, 4]
    # The child held them in its pipe: it is killed, so none of them can start.
    [report] = collect_until(process_pool, 1)
    assert isinstance(report, Crashed) and report.attempt.task_id == 1
    assert report.kill_reason == "cold stop"
    time.sleep(0.3)
    assert process_pool.collect() == [] and not process_pool.busy()


def test_big_attempts_wait_in_the_daemon_until_their_child_is_idle(process_pool):
    fast(process_pool)
    big = {"blob": "x" * 40_000}  # over the pipe budget: never queued behind another
    process_pool.submit(attempt(1, "sleep", {"seconds": 0.3}))
    process_pool.submit(attempt(2, "noop", big))
    assert len(process_pool.slots[0].queue) == 1 and len(process_pool.waiting) == 1
    reports = collect_until(process_pool, 2)
    assert [report.attempt.task_id for report in reports] == [1, 2]


def test_threads_share_one_queue_so_a_slow_handler_holds_nothing_up(thread_pool):
    fast(thread_pool)
    thread_pool.submit(attempt(1, "sleep", {"seconds": 30}))
    time.sleep(0.1)
    for task_id in range(2, 8):
        thread_pool.submit(attempt(task_id))
    reports = collect_until(thread_pool, 6)
    assert sorted(report.attempt.task_id for report in reports) == [2, 3, 4, 5, 6, 7]
    assert thread_pool.kill(1, 9, "killed after exceeding its time limit of 1 s") is True
    [crash] = collect_until(thread_pool, 1)
    assert isinstance(crash, Crashed) and crash.attempt.task_id == 1
    thread_pool.submit(attempt(8))  # the slot has a fresh thread
    [report] = collect_until(thread_pool, 1)
    assert report.attempt.task_id == 8 and not thread_pool.busy()


def test_thread_pool_withdraw_returns_unstarted_attempts(thread_pool):
    fast(thread_pool)
    thread_pool.submit(attempt(1, "sleep", {"seconds": 0.5}))
    thread_pool.submit(attempt(2, "sleep", {"seconds": 0.5}))
    time.sleep(0.1)  # both threads busy
    for task_id in (3, 4):
        thread_pool.submit(attempt(task_id))
    assert sorted(a.task_id for a in thread_pool.withdraw("declared lost")) == [3, 4]
    reports = collect_until(thread_pool, 2)
    assert sorted(report.attempt.task_id for report in reports) == [1, 2]
    assert not thread_pool.busy()


def test_an_attempt_sent_to_a_child_that_just_died_waits_for_its_replacement(process_pool):
    """The child dies between two collects: the send fails, the attempt is not blamed."""
    import os
    import signal

    child = process_pool.slots[0].process
    os.kill(child.pid, signal.SIGKILL)
    child.join()  # dead, but the pool has not noticed (no collect yet)
    process_pool.submit(attempt(1))
    assert process_pool.slots[0].broken and list(process_pool.waiting)[0][0].task_id == 1
    [report] = collect_until(process_pool, 1)
    assert isinstance(report, Finished) and report.attempt.task_id == 1
    assert process_pool.slots[0].process is not child


def test_idle_counts_the_slots_with_nothing_to_run_not_the_prefetch_room(thread_pool):
    """What a daemon may claim of concurrency-limited types (``claim_tasks(limited=...)``):
    only slots that would start the task at once, however much prefetch room is left."""
    fast(thread_pool)
    assert (thread_pool.idle(), thread_pool.free()) == (2, 16)
    thread_pool.submit(attempt(1, "sleep", {"seconds": 0.5}))
    assert thread_pool.idle() == 1
    thread_pool.submit(attempt(2, "sleep", {"seconds": 0.5}))
    assert thread_pool.idle() == 0
    assert thread_pool.free() == 14  # room to prefetch, but not for a limited task
    collect_until(thread_pool, 2)
    assert thread_pool.idle() == 2


# --- taking back prefetched attempts (a pause: atp.daemon.engine._give_back_paused) ---------


def _started(log) -> list[int]:
    """The tasks whose handler began, from the lines ``record_attempt`` wrote."""
    if not log.exists():
        return []
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    return [line["task"] for line in lines if line["event"] == "start"]


def test_take_back_skips_attempts_already_in_a_child_s_pipe(process_pool, tmp_path):
    fast(process_pool)
    log, release = tmp_path / "runs.jsonl", tmp_path / "release"
    process_pool.submit(attempt(1, "record_attempt", {"log": str(log), "until": str(release)}))
    for task_id in (2, 3, 4, 5):
        process_pool.submit(attempt(task_id, "record_attempt", {"log": str(log)}))
    slot = process_pool.slots[0]
    assert len(slot.queue) == 5  # all sent ahead to the one child, behind a held handler
    wait_for(lambda: _started(log) == [1])
    assert sorted(a.task_id for a in process_pool.unstarted()) == [2, 3, 4, 5]
    taken = process_pool.take_back([2, 4, 99])
    assert [a.task_id for a in taken] == [2, 4]
    assert process_pool.held == 3 and [a.task_id for a in slot.queue] == [1]
    # 3 and 5 wait to be sent again; nothing more goes to the child while 2 and 4 sit in
    # its pipe, so the numbers it gives what it receives stay those the pool counts.
    assert [a.task_id for a, _ in process_pool.waiting] == [3, 5] and slot.fenced
    process_pool.submit(attempt(6, "record_attempt", {"log": str(log)}))
    assert len(slot.queue) == 1
    release.touch()
    reports = collect_until(process_pool, 4)
    assert [r.attempt.task_id for r in reports] == [1, 3, 5, 6]
    assert all(isinstance(r, Finished) and r.outcome.succeeded for r in reports)
    assert _started(log) == [1, 3, 5, 6]  # 2 and 4 never began
    assert not process_pool.busy() and process_pool.unstarted() == []


def test_take_back_leaves_a_running_handler_alone(process_pool, tmp_path):
    fast(process_pool)
    log, release = tmp_path / "runs.jsonl", tmp_path / "release"
    process_pool.submit(attempt(1, "record_attempt", {"log": str(log), "until": str(release)}))
    wait_for(lambda: _started(log) == [1])
    assert process_pool.take_back([1]) == [] and process_pool.unstarted() == []
    release.touch()
    [report] = collect_until(process_pool, 1)
    assert isinstance(report, Finished) and report.attempt.task_id == 1


def test_thread_pool_take_back_takes_only_the_named_unstarted_attempts(thread_pool):
    fast(thread_pool)
    thread_pool.submit(attempt(1, "sleep", {"seconds": 0.5}))
    thread_pool.submit(attempt(2, "sleep", {"seconds": 0.5}))
    time.sleep(0.1)  # both threads busy
    for task_id in (3, 4, 5):
        thread_pool.submit(attempt(task_id))
    assert sorted(a.task_id for a in thread_pool.unstarted()) == [3, 4, 5]
    assert [a.task_id for a in thread_pool.take_back([1, 3, 5])] == [3, 5]
    reports = collect_until(thread_pool, 3)
    assert sorted(report.attempt.task_id for report in reports) == [1, 2, 4]
    time.sleep(0.1)
    assert thread_pool.collect() == [] and not thread_pool.busy()


def test_asyncio_pool_take_back_takes_attempts_waiting_for_a_slot(settings):
    settings.ATP = {"PREFETCH": 8}
    pool = AsyncioPool(1)
    try:
        pool.submit(attempt(1, "async_sleep", {"seconds": 0.3}))
        for task_id in (2, 3):
            pool.submit(attempt(task_id, "async_sleep", {"seconds": 0}))
        wait_for(lambda: [a.task_id for a in pool.unstarted()] == [2, 3])
        assert [a.task_id for a in pool.take_back([2])] == [2]
        reports = collect_until(pool, 2)
        assert [report.attempt.task_id for report in reports] == [1, 3]
        assert not pool.busy()
    finally:
        pool.stop(timeout=2)


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
