"""Handlers of the workflow tests: each reads its dependencies' results."""


def add_one(task_status, input):
    """Return the first dependency's result plus one (``input["start"]`` without one)."""
    results = task_status.dependency_results()
    return (results[0] if results else (input or {}).get("start", 0)) + 1


def square(task_status, input):
    """Return ``input["x"]`` squared."""
    return input["x"] ** 2


def total(task_status, input):
    """Return the sum of the dependencies' results (None counted as 0)."""
    return sum(result or 0 for result in task_status.dependency_results())


def results(task_status, input):
    """Return the dependencies' results as they arrive."""
    return task_status.dependency_results()


def fail(task_status, input):
    """Raise."""
    raise RuntimeError("workflow step failed on purpose")


def not_json(task_status, input):
    """Return a value that is not JSON."""
    return {1, 2, 3}


def square_slowly(task_status, input):
    """Sleep ``input["sleep"]`` seconds, then return ``input["x"]`` squared."""
    import time

    time.sleep(input.get("sleep", 0))
    return input["x"] ** 2
