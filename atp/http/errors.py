"""The API's error replies: every failure, expected or not, answers JSON ``{"error": …}``.

- 400 bad parameter or body, 404 unknown task, type, worker or route, 405 wrong method,
  409 duplicate identifier, 413 body over ``DATA_UPLOAD_MAX_MEMORY_SIZE``, 503 queue full.
- Anything else a view raises is a bug: it is logged with its traceback (``atp.http``) and
  reported through Django's ``got_request_exception`` signal, as Django reports the
  exceptions it catches, and the client gets a JSON 500 instead of Django's HTML page.
"""

import logging

from django.conf import settings
from django.core import signals
from django.core.exceptions import BadRequest, RequestDataTooBig, SuspiciousOperation
from django.http import JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.http.request import RawPostDataException
from django.views.decorators.csrf import csrf_exempt

from atp import validation
from atp.exceptions import DuplicateTask, InvalidInput, QueueFull, TaskNotFound, UnknownTaskType

logger = logging.getLogger("atp.http")

REALM = 'Basic realm="ATP API"'

#: Exceptions a view may raise, and the status each becomes.
ERROR_STATUS = (
    (TaskNotFound, 404),
    (UnknownTaskType, 404),
    (DuplicateTask, 409),
    (QueueFull, 503),
    (InvalidInput, 400),
)


def error(status: int, message: str) -> JsonResponse:
    """A JSON error reply ``{"error": message}`` with ``status``."""
    response = JsonResponse({"error": message}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = REALM
    return response


def reply_for(exc: Exception, request) -> JsonResponse:
    """The JSON reply to an exception raised while answering ``request``."""
    for kind, status in ERROR_STATUS:
        if isinstance(exc, kind):
            return error(status, str(exc))
    if isinstance(exc, RequestDataTooBig):
        return error(
            413,
            f"request body larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes "
            "(DATA_UPLOAD_MAX_MEMORY_SIZE)",
        )
    if isinstance(
        exc, SuspiciousOperation | BadRequest | MultiPartParserError | RawPostDataException
    ):
        # Too many form fields or files, a broken multipart body, a body read twice: the
        # request is at fault, not the code.
        return error(400, f"bad request: {exc}")
    logger.exception(
        "Internal error answering %s %s", request.method, request.path, extra={"request": request}
    )
    signals.got_request_exception.send(sender=None, request=request)
    return error(500, "internal error; the server logged it")


def unstorable_parameter(request, kwargs: dict) -> str | None:
    """The name of a URL part or query/form parameter the databases cannot store, or None.

    A NUL character fails every PostgreSQL statement it reaches; a value holding one is
    refused up front rather than wherever it is used.
    """
    candidates = [*kwargs.items(), *request.GET.lists()]
    if request.method == "POST" and request.content_type in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        candidates.extend(request.POST.lists())
    for name, value in candidates:
        values = value if isinstance(value, list) else [value]
        if not all(validation.storable(str(item)) for item in [name, *values]):
            return name if validation.storable(name) else repr(name)
    return None


@csrf_exempt  # no state changes; the JSON 405/404 must not become a CSRF page
def not_found(request, route=""):
    """Any path under ``api/`` that names no route: a JSON 404, like every other error."""
    return error(404, f"no API route {request.path!r}; see api/openapi.json")
