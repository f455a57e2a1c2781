"""Checked by mypy in ``make lint``: ``@task`` keeps the decorated function's types.

Each line marked ``type: ignore[...]`` is a mistake mypy must catch; with
``warn_unused_ignores`` an ignore that is no longer needed fails the check, so the test
holds both ways. Never run, only type-checked.
"""

from atp import task
from atp.taskstatus import TaskStatus


@task(timeout=600)
def resize(path: str, width: int = 640) -> dict[str, object]:
    """A plain task."""
    return {"path": path, "width": width}


@task(takes_status=True)
def report(task_status: TaskStatus, steps: int) -> int:
    """A task that gets its TaskStatus first; callers do not pass it."""
    return steps


@task
async def fetch(url: str) -> bytes:
    """An async task."""
    return url.encode()


def uses() -> None:
    """Right and wrong calls."""
    handle = resize.enqueue("a.jpg", width=320)
    summary: dict[str, object] | None = handle.result
    resize.using(priority=5, countdown=10).enqueue("b.jpg")
    steps: int = report.enqueue(3).wait(timeout=10)
    body: bytes = fetch.enqueue("https://example.com").wait()
    print(summary, steps, body)

    resize.enqueue("a.jpg", width="x")  # type: ignore[arg-type]
    resize.enqueue()  # type: ignore[call-arg]
    report.enqueue("three")  # type: ignore[arg-type]
    wrong: str = resize.enqueue("a.jpg").wait()  # type: ignore[assignment]
    fetch.enqueue(42)  # type: ignore[arg-type]
    print(wrong)
