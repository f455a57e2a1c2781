"""HTTP routes that pause and resume queues and task types, for every daemon at once.

``POST api/queue/pause/<name>``, ``api/queue/resume/<name>``, ``api/task-type/pause/<type>``
and ``api/task-type/resume/<type>``, with the permission to change task types
(``atp.change_tasktype``), as the rate-limit and timeout routes. Flower has no such routes;
the replies follow its ``{"message": ...}`` shape, plus ``paused`` (the state now) and
``changed`` (false when it already was in that state).
"""

from django.http import JsonResponse

from atp import control
from atp.http.auth import CONFIGURE, api_view


def _reply(what: str, paused: bool, changed: bool) -> JsonResponse:
    state = "paused" if paused else "resumed"
    message = f"{what} {state}" if changed else f"{what} was already {state}"
    return JsonResponse({"message": message, "paused": paused, "changed": changed})


@api_view(CONFIGURE, methods=("POST",))
def pause_queue(request, name):
    """POST api/queue/pause/<name>: no daemon starts the queue's tasks until it is resumed."""
    return _reply(f"queue '{name}'", True, control.pause_queue(name))


@api_view(CONFIGURE, methods=("POST",))
def resume_queue(request, name):
    """POST api/queue/resume/<name>: daemons start the queue's tasks again."""
    return _reply(f"queue '{name}'", False, control.resume_queue(name))


@api_view(CONFIGURE, methods=("POST",))
def pause_task_type(request, name):
    """POST api/task-type/pause/<type>: no daemon starts tasks of the type until resumed."""
    return _reply(f"task type '{name}'", True, control.pause_task_type(name))


@api_view(CONFIGURE, methods=("POST",))
def resume_task_type(request, name):
    """POST api/task-type/resume/<type>: daemons start tasks of the type again."""
    return _reply(f"task type '{name}'", False, control.resume_task_type(name))
