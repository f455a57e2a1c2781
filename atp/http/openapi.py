"""The OpenAPI 3 description of ATP's HTTP API, served at ``api/openapi.json``.

Written once, here, from the same constants the views check, so the limits it states are
the ones the code enforces. The fuzz test (``tests/unit/test_api_fuzz.py``) generates
requests from it and checks that no answer is a 5xx and that every error is JSON.
Paths are relative to where the project mounts ``atp.urls``; the served copy names that
prefix as its server.
"""

import copy

from django.http import JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt

from atp import validation
from atp.http.errors import error
from atp.http.views import MAX_PAGE
from atp.query import MAX_INDEX, SORT_KEYS
from atp.query.search import MAX_LENGTH as MAX_SEARCH
from atp.query.states import CELERY_STATE

_ERROR = {"$ref": "#/components/responses/Error"}
_NUMBER_TEXT = {"type": "string", "example": "30"}


def _reply(description: str, schema: dict) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _query(name: str, description: str, schema: dict | None = None) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def _path(name: str, description: str) -> dict:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def _errors(*codes: int) -> dict:
    return {str(code): _ERROR for code in (400, 401, 403, 405, 413, *codes)}


TASK_ID = _path("task_id", "The task's id (digits) or uuid.")
TYPE_NAME = _path("name", "A task type identifier (may contain '/').")
#: A unique or concurrency key: the bounds ``validation.identifier`` checks.
KEY = {"type": "string", "minLength": 1, "maxLength": validation.IDENTIFIER_MAX_LENGTH}
TIME = {"type": "string", "example": "2026-05-01 12:00"}
TIME_HELP = (
    "Inclusive bound: 'YYYY-MM-DD HH:MM' or ISO 8601 (naive: in TIME_ZONE), or epoch seconds; "
    f"from {validation.MIN_MOMENT:%Y-%m-%d} to {validation.MAX_MOMENT:%Y-%m-%d}."
)
STATES = sorted({*CELERY_STATE.values(), "RETRY", "REJECTED", "IGNORED"})

SCHEMA = {
    "openapi": "3.0.3",
    "info": {
        "title": "ATP HTTP API",
        "version": "1",
        "description": (
            "Flower's REST API over ATP's task queue (see the README, 'HTTP API'). Every "
            'error is JSON {"error": message}.'
        ),
    },
    "security": [{"basic": []}, {"session": []}],
    "paths": {
        "/api/openapi.json": {
            "get": {
                "summary": "This description (no authentication needed).",
                "security": [],
                "responses": {"200": _reply("The OpenAPI document.", {"type": "object"})},
            }
        },
        "/api/tasks": {
            "get": {
                "summary": "Tasks filtered, sorted and paged: an object uuid -> task dict.",
                "parameters": [
                    _query(
                        "limit",
                        f"At most this many tasks (default and maximum {MAX_PAGE}).",
                        {"type": "integer", "minimum": 0, "maximum": MAX_PAGE},
                    ),
                    _query(
                        "offset",
                        "Skip this many tasks.",
                        {"type": "integer", "minimum": 0, "maximum": MAX_INDEX},
                    ),
                    _query("workername", "Daemon server id or host name; 'All': any."),
                    _query("taskname", "Task type identifier; 'All': any."),
                    _query(
                        "state", "Celery or ATP state name.", {"type": "string", "enum": STATES}
                    ),
                    _query("received_start", TIME_HELP, TIME),
                    _query("received_end", TIME_HELP, TIME),
                    _query("started_start", TIME_HELP, TIME),
                    _query("started_end", TIME_HELP, TIME),
                    _query(
                        "sort_by",
                        "Sort key, '-' for descending; default newest first.",
                        {"type": "string", "enum": [*SORT_KEYS, *(f"-{k}" for k in SORT_KEYS)]},
                    ),
                    _query(
                        "search",
                        "Search query (README, 'Search').",
                        {"type": "string", "maxLength": MAX_SEARCH},
                    ),
                ],
                "responses": {
                    "200": _reply(
                        "uuid -> task dict, in order.",
                        {
                            "type": "object",
                            "additionalProperties": {"$ref": "#/components/schemas/Task"},
                        },
                    ),
                    **_errors(),
                },
            }
        },
        "/api/task/types": {
            "get": {
                "summary": "Registered task type identifiers, sorted.",
                "responses": {
                    "200": _reply(
                        "The names.",
                        {
                            "type": "object",
                            "properties": {
                                "task-types": {"type": "array", "items": {"type": "string"}}
                            },
                        },
                    ),
                    **_errors(),
                },
            }
        },
        "/api/task/info/{task_id}": {
            "get": {
                "summary": "One task's dict.",
                "parameters": [TASK_ID],
                "responses": {
                    "200": _reply("The task.", {"$ref": "#/components/schemas/Task"}),
                    **_errors(404),
                },
            }
        },
        "/api/task/result/{task_id}": {
            "get": {
                "summary": "State, and result once ended; waits up to timeout seconds.",
                "parameters": [
                    TASK_ID,
                    _query(
                        "timeout",
                        "Seconds to wait for the end; at most ATP['API_MAX_WAIT'] (60 by default).",
                        {"type": "number", "minimum": 0},
                    ),
                ],
                "responses": {
                    "200": _reply("The state.", {"$ref": "#/components/schemas/Result"}),
                    **_errors(404),
                },
            }
        },
        "/api/task/apply/{name}": {
            "post": {
                "summary": "Enqueue a task and wait for it (at most ATP['API_MAX_WAIT']).",
                "parameters": [TYPE_NAME],
                "requestBody": {"$ref": "#/components/requestBodies/Apply"},
                "responses": {
                    "200": _reply("The state.", {"$ref": "#/components/schemas/Result"}),
                    **_errors(404, 409, 503),
                },
            }
        },
        "/api/task/async-apply/{name}": {
            "post": {
                "summary": "Enqueue a task; reply at once.",
                "parameters": [TYPE_NAME],
                "requestBody": {"$ref": "#/components/requestBodies/Apply"},
                "responses": {
                    "200": _reply("The new task.", {"$ref": "#/components/schemas/Result"}),
                    **_errors(404, 409, 503),
                },
            }
        },
        "/api/task/send-task/{name}": {
            "post": {
                "summary": "As async-apply (by name).",
                "parameters": [TYPE_NAME],
                "requestBody": {"$ref": "#/components/requestBodies/Apply"},
                "responses": {
                    "200": _reply("The new task.", {"$ref": "#/components/schemas/Result"}),
                    **_errors(404, 409, 503),
                },
            }
        },
        "/api/task/abort/{task_id}": {
            "post": {
                "summary": "Ask a task to stop (it ends REVOKED).",
                "parameters": [TASK_ID],
                "responses": {
                    "200": _reply("Done.", {"$ref": "#/components/schemas/Message"}),
                    **_errors(404),
                },
            }
        },
        "/api/task/revoke/{task_id}": {
            "post": {
                "summary": "Cancel a task; with terminate, signal its handler.",
                "parameters": [
                    TASK_ID,
                    _query("terminate", "true/false (default false).", {"type": "boolean"}),
                    _query(
                        "signal", "Signal name or number (default SIGTERM).", {"type": "string"}
                    ),
                ],
                "responses": {
                    "200": _reply("Done.", {"$ref": "#/components/schemas/Message"}),
                    **_errors(404),
                },
            }
        },
        "/api/task/rate-limit/{name}": {
            "post": {
                "summary": "Set a type's rate limit across all daemons.",
                "parameters": [
                    TYPE_NAME,
                    _query(
                        "ratelimit",
                        f"'n/s', 'n/m' or 'n/h' (n at most {validation.MAX_RATE}); "
                        "a bare n is per second; 0 or empty: none. Also as a form field.",
                        {"type": "string", "example": "10/m"},
                    ),
                    _query("workername", "Accepted and ignored (ATP's limits hold everywhere)."),
                ],
                "responses": {
                    "200": _reply("Done.", {"$ref": "#/components/schemas/Message"}),
                    **_errors(404),
                },
            }
        },
        "/api/task/timeout/{name}": {
            "post": {
                "summary": "Set a type's soft and hard time limits (absent: none).",
                "parameters": [
                    TYPE_NAME,
                    _query(
                        "soft",
                        f"Seconds, > 0 and at most {validation.MAX_SECONDS}, below hard.",
                        {"type": "number", "exclusiveMinimum": True, "minimum": 0},
                    ),
                    _query(
                        "hard",
                        f"Seconds, > 0 and at most {validation.MAX_SECONDS}.",
                        {"type": "number", "exclusiveMinimum": True, "minimum": 0},
                    ),
                    _query("workername", "Accepted and ignored."),
                ],
                "responses": {
                    "200": _reply("Done.", {"$ref": "#/components/schemas/Message"}),
                    **_errors(404),
                },
            }
        },
        **{
            f"/api/{kind}/{verb}/{{name}}": {
                "post": {
                    "summary": f"{verb.capitalize()} a {what} for every daemon.",
                    "parameters": [_path("name", f"The {what}'s name (may contain '/').")],
                    "responses": {
                        "200": _reply(
                            "Done: message, whether it is now paused, whether that changed.",
                            {"type": "object"},
                        ),
                        **_errors(404),
                    },
                }
            }
            for kind, what in (("queue", "queue"), ("task-type", "task type"))
            for verb in ("pause", "resume")
        },
        "/api/schedules": {
            "get": {
                "summary": "Periodic tasks (README, 'Periodic tasks').",
                "responses": {"200": _reply("The schedules.", {"type": "object"}), **_errors()},
            }
        },
        **{
            f"/api/schedule/{verb}/{{name}}": {
                "post": {
                    "summary": f"{verb.capitalize()} a schedule.",
                    "parameters": [_path("name", "The schedule's name.")],
                    "responses": {
                        "200": _reply("Done.", {"type": "object"}),
                        **_errors(404),
                    },
                }
            }
            for verb in ("pause", "resume")
        },
        "/api/workers": {
            "get": {
                "summary": "ATP's daemons: server id -> daemon (or -> alive with status=true).",
                "parameters": [
                    _query("workername", "Server id or host name."),
                    _query("status", "true: only whether each is alive.", {"type": "boolean"}),
                ],
                "responses": {
                    "200": _reply("The daemons.", {"type": "object"}),
                    **_errors(404),
                },
            }
        },
    },
    "components": {
        "securitySchemes": {
            "basic": {"type": "http", "scheme": "basic", "description": "Django users."},
            "session": {"type": "apiKey", "in": "cookie", "name": "sessionid"},
        },
        "responses": {
            "Error": _reply(
                "400 bad parameter, 401 no user, 403 no permission or CSRF, 404 unknown task, "
                "type, worker or route, 405 wrong method, 409 duplicate identifier, 413 body "
                "too large, 503 queue full.",
                {"$ref": "#/components/schemas/Error"},
            )
        },
        "requestBodies": {
            "Apply": {
                "required": False,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Apply"}}},
            }
        },
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}},
            },
            "Message": {"type": "object", "properties": {"message": {"type": "string"}}},
            "Result": {
                "type": "object",
                "required": ["task-id", "state"],
                "properties": {
                    "task-id": {"type": "string"},
                    "state": {"type": "string"},
                    "result": {},
                    "traceback": {"type": "string", "nullable": True},
                    "created": {
                        "type": "boolean",
                        "description": (
                            "Apply routes given a unique_key only: false when a task of the "
                            "type held the key, so nothing was created and this is that task."
                        ),
                    },
                },
            },
            "Apply": {
                "type": "object",
                "description": (
                    "The task's input is 'input' if given; else args alone (a list), kwargs "
                    "alone (an object), or both as {'args': [...], 'kwargs': {...}}."
                ),
                "properties": {
                    "args": {"type": "array", "items": {}},
                    "kwargs": {"type": "object"},
                    "input": {},
                    "identifier": {"type": "string", "minLength": 1, "maxLength": 64},
                    "priority": {
                        "type": "integer",
                        "minimum": validation.PRIORITY_MIN,
                        "maximum": validation.PRIORITY_MAX,
                    },
                    "queue": {"type": "string", "minLength": 1, "maxLength": 64},
                    "countdown": {
                        "type": "number",
                        "minimum": 0,
                        "maximum": validation.MAX_SECONDS,
                    },
                    "eta": {"description": "A time as in /api/tasks' bounds.", **TIME},
                    "expires": {
                        "description": "A time, or seconds from now.",
                        "oneOf": [
                            TIME,
                            {
                                "type": "number",
                                "minimum": -validation.MAX_SECONDS,
                                "maximum": validation.MAX_SECONDS,
                            },
                        ],
                    },
                    "unique_key": {
                        **KEY,
                        "description": (
                            "While a task of the type holds this key (from its enqueue until "
                            "it ends), nothing is created and the reply is that task's, with "
                            "created false."
                        ),
                    },
                    "unique_for": {
                        "type": "number",
                        "minimum": 0,
                        "maximum": validation.MAX_SECONDS,
                        "description": (
                            "Seconds the unique_key stays held after its task's enqueue, even "
                            "once the task ended; needs unique_key."
                        ),
                    },
                    "concurrency_key": {
                        **KEY,
                        "description": (
                            "The key the type's concurrency_limit counts: at most that many "
                            "tasks of the type and key run at once, on all daemons."
                        ),
                    },
                    "timeout": {
                        "type": "number",
                        "minimum": 0,
                        "description": "apply only: seconds to wait, at most ATP['API_MAX_WAIT'].",
                    },
                },
                "additionalProperties": False,
            },
            "Task": {
                "type": "object",
                "description": "Flower's task dict plus ATP's fields (README, 'Querying').",
                "properties": {
                    "uuid": {"type": "string"},
                    "name": {"type": "string"},
                    "state": {"type": "string"},
                    "id": {"type": "integer"},
                    "identifier": {"type": "string"},
                    "status": {"type": "string"},
                    "status_code": {"type": "integer"},
                    "args": {"type": "string"},
                    "kwargs": {"type": "string"},
                    "received": {"type": "number", "nullable": True},
                    "started": {"type": "number", "nullable": True},
                    "eta": {"type": "string", "nullable": True},
                    "expires": {"type": "string", "nullable": True},
                    "priority": {"type": "integer"},
                    "queue": {"type": "string"},
                },
            },
        },
    },
}


def document(prefix: str) -> dict:
    """The description with its server: ``prefix`` is where ``atp.urls`` is mounted."""
    served = copy.deepcopy(SCHEMA)
    served["servers"] = [{"url": prefix.rstrip("/") or "/"}]
    return served


@csrf_exempt  # no state changes; the JSON 405/404 must not become a CSRF page
def openapi_json(request):
    """GET api/openapi.json: this description, for anyone (it holds no data)."""
    if request.method not in ("GET", "HEAD"):
        response = error(405, f"method {request.method} not allowed")
        response["Allow"] = "GET, HEAD"
        return response
    here = reverse("atp:api-openapi")
    prefix = here.removesuffix("/api/openapi.json")
    return JsonResponse(document(prefix))
