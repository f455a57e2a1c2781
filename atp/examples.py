"""Example tasks: small ``@task`` functions that show what a task can do.

Their type names (``example.add``…) and handler paths (``atp.examples.add``…) are those the
examples always had, so tasks stored before they became decorated still run: a stored
JSON object input is passed as keyword arguments (see ``atp.decorators.split_input``).
"""

import json

from atp import discovery, task


@task(name="example.add")
def add(a: int, b: int) -> int:
    """Add two numbers; the sum is the task's result (and a JSON response)."""
    return a + b


@task(name="example.echo", takes_status=True)
def echo(task_status, **fields) -> None:
    """Store the keyword arguments back as the response, pausing and resuming on the way."""
    task_status.set_paused("Paused to show the PAUSED status.")
    task_status.set_running("Resumed.")
    task_status.store_response(json.dumps(fields), "application/json")


@task(name="example.count", takes_status=True)
def count(task_status, to: int = 5) -> str:
    """Count to ``to``, reporting progress at each step."""
    target = int(to)
    for done in range(1, target + 1):
        task_status.set_progress(done, target, f"counted to {done}")
    task_status.store_response(f"counted to {target}", "text/plain")
    return f"counted to {target}"


@task(name="example.fail")
def fail(n: int) -> None:
    """Always fail, to show how a failure is recorded."""
    raise ValueError(f"example failure for n={n!r}")


#: The example tasks, in the order ``enqueue_examples`` enqueues them.
EXAMPLE_TASKS = (add, echo, count, fail)
#: Example types whose tasks fail on purpose, and why (``atp_status`` says so).
INTENDED_FAILURES = {
    "example.fail": "its handler always raises, to show how a failure is recorded",
}
#: identifier -> (handler path, options) of the example task types.
EXAMPLE_TYPES = {example.name: (example.handler, example.type_options) for example in EXAMPLE_TASKS}


def register_examples():
    """Create (or update) every example task type; return them."""
    from atp.models import TaskType

    for example in EXAMPLE_TASKS:
        discovery.ensure_registered(example, again=True)
    return list(TaskType.objects.filter(identifier__in=EXAMPLE_TYPES).order_by("identifier"))


def enqueue_examples(count_per_type=2):
    """Enqueue ``count_per_type`` tasks of each example type; return their ids."""
    message = "Enqueued by atp_examples."
    ids = []
    for n in range(count_per_type):
        ids.append(add.using(message=message).enqueue(n, n * 10).id)
        ids.append(echo.using(message=message).enqueue(message=f"hello {n}").id)
        ids.append(count.using(message=message).enqueue(to=3 + n).id)
        ids.append(fail.using(message=message).enqueue(n).id)
    return ids
