"""Example task types: small handlers that show what a handler can do."""

import json

from atp import tracker

#: identifier -> (handler path, options) of the example task types.
EXAMPLE_TYPES: dict[str, tuple[str, dict]] = {
    "example.add": ("atp.examples.add", {}),
    "example.echo": ("atp.examples.echo", {}),
    "example.count": ("atp.examples.count", {}),
    "example.fail": ("atp.examples.fail", {}),
}


def add(task_status, input):
    """Add the numbers ``input["a"]`` and ``input["b"]``; the sum is the JSON response."""
    total = input["a"] + input["b"]
    task_status.store_response(json.dumps({"sum": total}), "application/json")
    return total


def echo(task_status, input):
    """Store the input back as the response, pausing and resuming on the way."""
    task_status.set_paused("Paused to show the PAUSED status.")
    task_status.set_running("Resumed.")
    task_status.store_response(json.dumps(input), "application/json")


def count(task_status, input):
    """Count to ``input["to"]``, reporting progress at each step."""
    target = int(input.get("to", 5))
    for done in range(1, target + 1):
        task_status.set_progress(done, target, f"counted to {done}")
    task_status.store_response(f"counted to {target}", "text/plain")


def fail(task_status, input):
    """Always fail, to show how a failure is recorded."""
    raise ValueError(f"example failure for input {input!r}")


def register_examples():
    """Register (or update) every example task type; return them."""
    return [
        tracker.register_task_type(identifier, handler, **options)
        for identifier, (handler, options) in EXAMPLE_TYPES.items()
    ]


def enqueue_examples(count_per_type=2):
    """Enqueue ``count_per_type`` tasks of each example type; return their ids."""
    inputs = {
        "example.add": lambda n: {"a": n, "b": n * 10},
        "example.echo": lambda n: {"message": f"hello {n}"},
        "example.count": lambda n: {"to": 3 + n},
        "example.fail": lambda n: {"n": n},
    }
    return [
        tracker.enqueue_task(identifier, input=make_input(n), message="Enqueued by atp_examples.")
        for n in range(count_per_type)
        for identifier, make_input in inputs.items()
    ]
