"""ATP's JSON HTTP API, shaped like Flower's REST API (routes, parameters, replies, codes).

Mount it with ``path("atp/", include("atp.urls"))``. Who may call what, CSRF and the error
replies are described in ``atp.http.auth``. Where ATP differs from Flower, it says so here.
"""

import json
from datetime import timedelta

from django.db.models import Count, OuterRef, Subquery
from django.http import JsonResponse
from django.utils import timezone

from atp import control, query, validation
from atp.conf import settings
from atp.exceptions import InvalidInput
from atp.http.auth import ACT, CONFIGURE, READ, api_view
from atp.http.errors import error
from atp.models import ACTIVE, TaskInstance, TaskType, Worker

#: Most tasks one /api/tasks reply holds (Flower never holds more than 10,000 in memory);
#: also the default when no limit is given. Page through larger results with offset.
MAX_PAGE = 10_000
#: Options the apply endpoints accept besides args, kwargs and input.
APPLY_OPTIONS = (
    "identifier",
    "priority",
    "queue",
    "countdown",
    "eta",
    "expires",
    "unique_key",
    "unique_for",
    "concurrency_key",
)
TRUE = ("y", "yes", "t", "true", "on", "1")
FALSE = ("n", "no", "f", "false", "off", "0")


# --- reading ------------------------------------------------------------------------------


@api_view(READ)
def tasks(request):
    """GET /api/tasks: an object uuid → task dict, filtered, sorted and paged.

    Parameters as Flower's (``All`` or empty means no filter): limit, offset, workername,
    taskname, state, received_start, received_end, sort_by, search; plus started_start
    and started_end.
    """
    params = request.GET
    limit = _integer(params, "limit", default=MAX_PAGE)
    if limit > MAX_PAGE:
        raise InvalidInput(f"limit must be at most {MAX_PAGE}; page with offset")
    found = query.iter_tasks(
        limit=limit,
        offset=_integer(params, "offset", default=0),
        type=_filter(params, "taskname"),
        worker=_filter(params, "workername"),
        state=_filter(params, "state"),
        sort_by=_filter(params, "sort_by"),
        received_start=_filter(params, "received_start"),
        received_end=_filter(params, "received_end"),
        started_start=_filter(params, "started_start"),
        started_end=_filter(params, "started_end"),
        search=_filter(params, "search"),
    )
    return JsonResponse({str(task.uuid): query.as_dict(task) for task in found})


@api_view(READ)
def task_info(request, task_id):
    """GET /api/task/info/<id or uuid>: the task dict; 404 for an unknown task."""
    task = query.get_task_by_id(task_id)
    if task is None:
        return error(404, f"Unknown task '{task_id}'")
    return JsonResponse(query.as_dict(task))


@api_view(READ)
def task_result(request, task_id):
    """GET /api/task/result/<id>?timeout=s: task-id and state, plus result once it ended.

    ``timeout`` is at most ``ATP["API_MAX_WAIT"]``: each wait holds a server thread, and
    reading needs only the view permission.
    """
    timeout = _wait_time(_number(request.GET, "timeout"), default=None)
    return JsonResponse(control.get_result(task_id, timeout).as_flower())


@api_view(READ)
def task_types(request):
    """GET /api/task/types: ``{"task-types": [sorted names]}``."""
    names = TaskType.objects.order_by("identifier").values_list("identifier", flat=True)
    return JsonResponse({"task-types": list(names)})


@api_view(READ)
def workers(request):
    """GET /api/workers: an object server id → daemon info (ATP's daemons, not Celery's).

    ``workername`` (server id or host name) selects daemons, 404 if none matches;
    ``status=true`` replies server id → alive instead.
    """
    active = (
        TaskInstance.objects.filter(server_id=OuterRef("server_id"), status__in=ACTIVE)
        .order_by()
        .values("server_id")
        .annotate(count=Count("pk"))
        .values("count")
    )
    daemons = Worker.objects.annotate(active=Subquery(active)).order_by("server_id")
    name = request.GET.get("workername")
    if name:
        daemons = [d for d in daemons if name in (d.server_id, d.hostname)]
        if not daemons:
            return error(404, f"Unknown worker '{name}'")
    cutoff = timezone.now() - timedelta(seconds=settings.WORKER_TIMEOUT)
    alive = {d.server_id: d.stopped_at is None and d.heartbeat_at >= cutoff for d in daemons}
    if _boolean(request.GET, "status", default=False):
        return JsonResponse(alive)
    return JsonResponse({d.server_id: _worker(d, alive[d.server_id]) for d in daemons})


def _worker(daemon: Worker, alive: bool) -> dict:
    return {
        "server_id": daemon.server_id,
        "hostname": daemon.hostname,
        "pid": daemon.pid,
        "started": daemon.started_at.timestamp(),
        "heartbeat": daemon.heartbeat_at.timestamp(),
        "stopped": daemon.stopped_at.timestamp() if daemon.stopped_at else None,
        "alive": alive,
        "active": daemon.active or 0,  # type: ignore[attr-defined]
    }


# --- running tasks ------------------------------------------------------------------------


@api_view(ACT, methods=("POST",))
def apply(request, name):
    """POST /api/task/apply/<type>: run a task and wait for it; Flower's reply shape.

    The body is a JSON object: ``args`` (array) and/or ``kwargs`` (object) as in Flower, or
    ATP's ``input`` (any JSON), plus options (``APPLY_OPTIONS``) and ``timeout`` (seconds
    to wait, at most and by default ``ATP["API_MAX_WAIT"]``). ``result`` is present once
    the task has ended.
    """
    body = _body(request)
    timeout = _wait_time(body.pop("timeout", None), default=settings.API_MAX_WAIT)
    input, options = _call(body)
    return _reply(control.apply(name, input, timeout=timeout, **options), options)


@api_view(ACT, methods=("POST",))
def async_apply(request, name):
    """POST /api/task/async-apply/<type>: enqueue; reply ``{"task-id", "state"}`` at once."""
    input, options = _call(_body(request))
    return _reply(control.async_apply(name, input, **options), options)


@api_view(ACT, methods=("POST",))
def send_task(request, name):
    """POST /api/task/send-task/<type>: as async-apply.

    Unlike Flower, an unknown type is 404: ATP cannot queue a task of a type it does not know.
    """
    input, options = _call(_body(request))
    return _reply(control.send_task(name, input, **options), options)


def _reply(result, options: dict) -> JsonResponse:
    """Flower's reply to an apply route; with a ``unique_key``, also whether it created the
    task (false: the key was held, and the reply is the holding task's)."""
    reply = result.as_flower()
    if options.get("unique_key") is not None:
        reply["created"] = result.created
    return JsonResponse(reply)


def _body(request) -> dict:
    if not request.body:
        return {}
    try:
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: JSON nested deeper than the parser's recursion limit.
        raise InvalidInput("invalid JSON body") from None
    if not isinstance(body, dict):
        raise InvalidInput("invalid options: the body must be a JSON object")
    return body


def _call(body: dict) -> tuple[object, dict]:
    """Split an apply body into the task input and ``enqueue_task`` options.

    The input is ``input`` if given; else ``args`` alone (a list), ``kwargs`` alone (an
    object), or, when Flower sends both non-empty, ``{"args": [...], "kwargs": {...}}``.
    """
    args, kwargs = body.pop("args", None), body.pop("kwargs", None)
    unknown = sorted(set(body) - set(APPLY_OPTIONS) - {"input"})
    if unknown:
        raise InvalidInput(f"Invalid option {unknown[0]!r}; options: {', '.join(APPLY_OPTIONS)}")
    if args is not None and not isinstance(args, list):
        raise InvalidInput("args must be an array")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise InvalidInput("kwargs must be an object")
    given = [name for name, value in (("args", args), ("kwargs", kwargs)) if value]
    if "input" in body and given:
        raise InvalidInput(
            f"a task's input is one JSON value: give input or args/kwargs, not both ({given})"
        )
    if "input" in body:
        input = body.pop("input")
    elif len(given) == 2:
        input = {"args": args, "kwargs": kwargs}
    else:
        input = kwargs or args or None
    for name in ("eta", "expires"):
        if isinstance(body.get(name), str):
            body[name] = query.parse_time(body[name], name)
    if "eta" in body:
        body["run_after"] = body.pop("eta")
    return input, body


# --- controlling tasks --------------------------------------------------------------------


@api_view(ACT, methods=("POST",))
def abort(request, task_id):
    """POST /api/task/abort/<id>: ask a running task to stop (it ends REVOKED)."""
    if control.abort(task_id):
        return JsonResponse({"message": f"Aborted '{task_id}'"})
    return JsonResponse({"message": f"Task '{task_id}' has already ended"})


@api_view(ACT, methods=("POST",))
def revoke(request, task_id):
    """POST /api/task/revoke/<id>?terminate=false&signal=SIGTERM: cancel a task."""
    params = _params(request)
    terminate = _boolean(params, "terminate", default=False)
    signal = params.get("signal") or "SIGTERM"
    if control.revoke(task_id, terminate=terminate, signal=signal):
        return JsonResponse({"message": f"Revoked '{task_id}'"})
    return JsonResponse({"message": f"Task '{task_id}' has already ended"})


@api_view(CONFIGURE, methods=("POST",))
def rate_limit(request, name):
    """POST /api/task/rate-limit/<type> with ``ratelimit`` ("10/m"; 0 or empty: none).

    The limit holds across all daemons, so Flower's ``workername`` is accepted and ignored.
    """
    params = _params(request)
    if "ratelimit" not in params:
        raise InvalidInput("missing argument 'ratelimit', for example ratelimit=10/m")
    if control.rate_limit(name, params["ratelimit"]):
        return JsonResponse({"message": "new rate limit set successfully"})
    return JsonResponse({"message": "rate limit disabled successfully"})


@api_view(CONFIGURE, methods=("POST",))
def timeout(request, name):
    """POST /api/task/timeout/<type> with ``soft`` and ``hard`` seconds (absent: no limit)."""
    params = _params(request)
    control.set_timeouts(name, soft=_number(params, "soft"), hard=_number(params, "hard"))
    return JsonResponse({"message": "time limits set successfully"})


# --- parameters ---------------------------------------------------------------------------


def _params(request):
    """Arguments from the query string and a form body, as Flower's ``get_argument`` reads."""
    params = request.GET.copy()
    params.update(request.POST)
    return params


def _filter(params, name):
    value = params.get(name, "").strip()
    return None if value in ("", "All") else value


def _integer(params, name, default):
    value = params.get(name, "").strip()
    if not value:
        return default
    number = validation.ascii_int(value)
    if number is None:
        raise InvalidInput(f"Invalid argument {name!r}: {value!r} is not a non-negative integer")
    return number


def _number(params, name):
    value = params.get(name, "").strip()
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise InvalidInput(f"Invalid argument {name!r}: {value!r} is not a number") from None


def _wait_time(value, default):
    """A result/apply ``timeout``: seconds from 0 to ``ATP["API_MAX_WAIT"]``, else 400."""
    if value is None:
        return default
    return validation.number(value, "timeout", minimum=0, maximum=settings.API_MAX_WAIT)


def _boolean(params, name, default):
    value = params.get(name, "").strip().lower()
    if not value:
        return default
    if value in TRUE or value in FALSE:
        return value in TRUE
    raise InvalidInput(f"Invalid argument {name!r}: {value!r} is not a boolean")
