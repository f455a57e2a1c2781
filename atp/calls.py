"""A ``@task`` call as stored input: ``{"args": [...], "kwargs": {...}}``, Celery's shape.

A leaf module (no ATP imports): the decorator writes this shape, the runner reads it, and
events show it as Celery's ``args``/``kwargs``.
"""


def call_input(args, kwargs) -> dict:
    """The stored input of a call: ``{"args": [...], "kwargs": {...}}``."""
    return {"args": list(args), "kwargs": dict(kwargs)}


def is_call_input(task_input) -> bool:
    """Whether an input has exactly the call shape ``{"args": list, "kwargs": dict}``."""
    return (
        isinstance(task_input, dict)
        and task_input.keys() == {"args", "kwargs"}
        and isinstance(task_input["args"], list)
        and isinstance(task_input["kwargs"], dict)
    )


def split_input(task_input) -> tuple[list, dict]:
    """The ``(args, kwargs)`` a task's input stands for.

    The call shape gives both; any other JSON object is keyword arguments, a list
    positional ones, None none, any other value one positional argument (so tasks enqueued
    with ``tracker.enqueue_task`` and a plain input still run).
    """
    if is_call_input(task_input):
        return list(task_input["args"]), dict(task_input["kwargs"])
    if isinstance(task_input, dict):
        return [], dict(task_input)
    if isinstance(task_input, list):
        return list(task_input), {}
    if task_input is None:
        return [], {}
    return [task_input], {}
