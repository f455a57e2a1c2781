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


def wait_for_abort(task_status, input):
    """Run until aborted (checking ``is_aborted``), at most ``input["seconds"]`` seconds."""
    deadline = time.monotonic() + float((input or {}).get("seconds", 30))
    while time.monotonic() < deadline:
        if task_status.is_aborted():
            return "aborted"
        time.sleep(0.05)
    return "not aborted"
