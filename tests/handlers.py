"""Importable handlers for the tests' task types."""

import os
import time


def noop(task_status, input):
    """Do nothing and succeed."""


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


def exit_hard(task_status, input):
    """Kill the process running the handler without any clean-up."""
    os._exit(1)


NOT_CALLABLE = "a string, not a function"


def record_attempt(task_status, input):
    """Append start and end lines (task, attempt, pid, time) to ``input["log"]``, sleeping between.

    The acceptance tests read the file to prove no two attempts of a task overlapped.
    """
    import json

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
    time.sleep(float(input.get("seconds", 0)))
    note("end")
