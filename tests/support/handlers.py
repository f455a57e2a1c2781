"""Importable handlers for the tests' task types."""

import json
import os
import time

from atp import tracker


def noop(task_status, input):
    """Do nothing and succeed."""


async def async_sleep(task_status, input):
    """Sleep ``input["seconds"]`` seconds on the event loop (the asyncio pool's handler)."""
    import asyncio

    await asyncio.sleep(float((input or {}).get("seconds", 1)))


def echo(task_status, input):
    """Store the input's repr as the response and return the input."""
    task_status.store_response(repr(input), "text/plain")
    return input


def fail(task_status, input):
    """Raise an exception."""
    raise RuntimeError(f"handler failed on purpose: {input!r}")


def sleep(task_status, input):
    """Sleep ``input["seconds"]`` seconds."""
    time.sleep(float((input or {}).get("seconds", 1)))


def heartbeating_sleep(task_status, input):
    """Sleep ``input["seconds"]`` seconds, calling ``heartbeat()`` every ``input["every"]``."""
    deadline = time.monotonic() + float(input["seconds"])
    while time.monotonic() < deadline:
        task_status.heartbeat()
        time.sleep(min(float(input["every"]), max(0.0, deadline - time.monotonic())))
    return "done"


def exit_hard(task_status, input):
    """Kill the process running the handler without any clean-up."""
    os._exit(1)


NOT_CALLABLE = "a string, not a function"


def record_attempt(task_status, input):
    """Append start and end lines (task, attempt, pid, time) to ``input["log"]``, sleeping between.

    The acceptance tests read the file to prove no two attempts of a task overlapped.
    """

    def note(event):
        line = {
            "task": task_status.task_id,
            "attempt": task_status.attempt,
            "pid": os.getpid(),
            "event": event,
            "t": time.time(),
        }
        # One write() of one short line with O_APPEND: lines from processes never interleave.
        with open(input["log"], "a") as log:
            log.write(json.dumps(line) + "\n")

    note("start")
    if "until" in input:  # held until the test creates that file (at most 120 s)
        deadline = time.monotonic() + 120
        while not os.path.exists(input["until"]) and time.monotonic() < deadline:
            time.sleep(0.02)
    else:
        time.sleep(float(input.get("seconds", 0)))
    note("end")


# --- handlers that use their TaskStatus (tests/unit/test_taskstatus_and_runner.py) -------


def introspect(task_status, input):
    """Store, as JSON, what ``TaskStatus`` tells the handler about its own task."""
    seen = {
        "info": list(task_status.get_info()),
        "identifier": task_status.get_identifier(),
        "status": list(task_status.get_status()),
        "attempt": task_status.attempt,
        "soft_time_limit": task_status.soft_time_limit,
        "input": input,
    }
    task_status.store_response(json.dumps(seen), "application/json")
    return "seen"


def fail_without_message(task_status, input):
    """Raise an exception whose text is empty."""
    raise ValueError()


def succeed_early(task_status, input):
    """End the task itself, then return a value the runner must not record again."""
    task_status.set_success("done early")
    return "ignored"


def fail_softly(task_status, input):
    """End the task as FAILED without raising."""
    task_status.set_failure("gave up")


def pause_and_resume(task_status, input):
    """Pause, resume, and return 1."""
    task_status.set_paused("waiting for a lock")
    task_status.set_running("got the lock")
    return 1


def return_while_paused(task_status, input):
    """Pause and return: the runner ends the task anyway."""
    task_status.set_paused("paused for good")


def report_progress(task_status, input):
    """Report three steps of progress and a heartbeat."""
    for done in range(1, 4):
        task_status.set_progress(done, 3, f"step {done}")
    task_status.heartbeat()


def wait_for_children(task_status, input):
    """Hand the task to its (imagined) subtasks: it must stay WAITING after the handler."""
    tracker.wait_for_subtasks(task_status.task_id, "children spawned", attempt=task_status.attempt)


def _take_over(task_status):
    """Give the task up and let daemon server-2 claim and start it, as after a zombie sweep."""
    tracker.reenqueue_task(task_status.task_id, "presumed lost")
    tracker.dequeue_task("server-2")
    tracker.begin_attempt(task_status.task_id, server_id="server-2")


def lose_then_write(task_status, input):
    """Lose the task, then try to report progress (StaleAttempt)."""
    _take_over(task_status)
    task_status.set_progress(1, 2, "too late")


def lose_then_return(task_status, input):
    """Lose the task, then return normally."""
    _take_over(task_status)
    return "late"


def lose_then_raise(task_status, input):
    """Lose the task, then fail."""
    _take_over(task_status)
    raise RuntimeError("failed after losing the task")


def soft_limited(task_status, input):
    """Sleep past the soft time limit; store what the handler saw before failing."""
    from atp.exceptions import SoftTimeLimitExceeded

    try:
        time.sleep(30)
    except SoftTimeLimitExceeded:
        task_status.store_response(f"soft limit {task_status.soft_time_limit}", "text/plain")
        raise


def segfault(task_status, input):
    """Crash the process with a segmentation fault (reads address 0)."""
    import ctypes

    ctypes.string_at(0)


def flaky(task_status, input):
    """Ask for a retry until attempt ``input["succeed_on"]``, then succeed.

    The ``except Exception`` proves the Retry signal cannot be swallowed by a handler.
    """
    if task_status.attempt < input["succeed_on"]:
        try:
            task_status.retry(exc=RuntimeError(f"flaky attempt {task_status.attempt}"))
        except Exception:  # pragma: no cover - Retry is a BaseException and passes through
            return "swallowed"
    return f"ok on attempt {task_status.attempt}"


def flaky_raise(task_status, input):
    """Raise until attempt ``input["succeed_on"]`` (automatic retries), then succeed."""
    if task_status.attempt < input["succeed_on"]:
        raise ConnectionRefusedError(f"remote down on attempt {task_status.attempt}")
    return "ok"


def fan_out(task_status, input):
    """Spawn one subtask of ``input["type"]`` per item of ``input["items"]``."""
    return task_status.spawn_subtasks(input["type"], input["items"], action_name="fan out")


def item(task_status, input):
    """A subtask: sleep ``input["sleep"]`` seconds, then fail if ``input["fail"]``."""
    time.sleep(float(input.get("sleep", 0)))
    if input.get("fail"):
        raise RuntimeError(f"item {input.get('n')} failed on purpose")


def fan_out_then_succeed(task_status, input):
    """Spawn subtasks, then try to end the (now WAITING) task itself (issue 14.7)."""
    task_status.spawn_subtasks(input["type"], input["items"])
    task_status.set_success("the handler says it is done")


def counting_item(task_status, input):
    """A subtask reporting item counts ``input["counts"]`` (``add_item_counts``) in steps."""
    for step in input["counts"]:
        task_status.add_item_counts(**step)
    if input.get("fail"):
        raise RuntimeError("counting item failed on purpose")


def wait_for_abort(task_status, input):
    """Run until aborted (checking ``is_aborted``), at most ``input["seconds"]`` seconds."""
    deadline = time.monotonic() + float((input or {}).get("seconds", 30))
    while time.monotonic() < deadline:
        if task_status.is_aborted():
            return "aborted"
        time.sleep(0.05)
    return "not aborted"


def oom_killed(task_status, input):
    """Die the way the kernel's OOM killer kills a process: SIGKILL, no clean-up."""
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def ignore_sigterm(task_status, input):
    """Ignore SIGTERM, then sleep ``input["seconds"]`` and succeed (a handler that survives it)."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(float((input or {}).get("seconds", 30)))
    return "survived"


def catch_sigterm(task_status, input):
    """On SIGTERM, return at once as if all went well (the task must still end REVOKED)."""
    import signal

    stopped = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopped.append(signum))
    deadline = time.monotonic() + float((input or {}).get("seconds", 30))
    while not stopped and time.monotonic() < deadline:
        time.sleep(0.05)
    return "returned after SIGTERM"


class _Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("this exception cannot be printed")


def raise_base_exception(task_status, input):
    """Raise ``KeyboardInterrupt``, ``GeneratorExit`` or an exception whose ``__str__`` raises."""
    kind = (input or {}).get("kind")
    if kind == "KeyboardInterrupt":
        raise KeyboardInterrupt
    if kind == "GeneratorExit":
        raise GeneratorExit
    raise _Unprintable


# --- text no database can store (issue 14.1) ----------------------------------------------


def raise_nul(task_status, input):
    """Raise an exception whose text holds a NUL character."""
    raise ValueError("bad\x00byte")


def raise_surrogate(task_status, input):
    """Raise an exception whose text holds a lone surrogate."""
    raise ValueError("bad\ud800byte")


class _NulRepr:
    def __repr__(self):
        return "result\x00repr\udcff"


def unstorable_everywhere(task_status, input):
    """Report progress, store a response and return a result, each with NUL or a surrogate."""
    task_status.set_progress(1, 2, "half\x00way \ud800")
    task_status.store_response(b"ok", "text/plain; x=\x00")
    return _NulRepr()
