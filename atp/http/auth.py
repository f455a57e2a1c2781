"""Who may use ATP's JSON API, and the error replies: the ``api_view`` decorator.

- Users authenticate with their Django session (the admin login) or with HTTP Basic
  credentials checked against Django's users (for scripts and curl).
- Reading needs ATP's view permission on task instances; acting on tasks needs the change
  permission on task instances; changing a type's rate limit or timeouts needs the change
  permission on task types. Anonymous requests get 401, others without permission 403.
- CSRF: every unsafe request that a browser could have sent is checked with Django's CSRF
  machinery (token + origin), exactly as for a normal view: those authenticated by a
  session cookie, and Basic-authenticated ones that carry browser headers (``Origin`` or
  ``Sec-Fetch-Site``; a browser that cached Basic credentials sends them). Scripts sending
  Basic credentials without those headers need no token, since no browser sent them.
- Errors are JSON ``{"error": message}``: 400 bad parameters, 404 unknown task or type,
  405 wrong method, 409 duplicate identifier, 503 queue full.
"""

import base64
import binascii
from functools import wraps

from django.contrib.auth import authenticate
from django.http import JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt

from atp.exceptions import DuplicateTask, InvalidInput, QueueFull, TaskNotFound, UnknownTaskType

READ = "atp.view_taskinstance"
ACT = "atp.change_taskinstance"
CONFIGURE = "atp.change_tasktype"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
REALM = 'Basic realm="ATP API"'

#: Exceptions a view may raise, and the status each becomes.
ERROR_STATUS = (
    (TaskNotFound, 404),
    (UnknownTaskType, 404),
    (DuplicateTask, 409),
    (QueueFull, 503),
    (InvalidInput, 400),
)
_HANDLED = tuple(kind for kind, _ in ERROR_STATUS)


def error(status: int, message: str) -> JsonResponse:
    """A JSON error reply ``{"error": message}`` with ``status``."""
    response = JsonResponse({"error": message}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = REALM
    return response


def api_view(permission: str, methods=("GET",)):
    """Make a function an API view: method check, authentication, permission, CSRF, errors."""
    allowed = tuple(methods) + (("HEAD",) if "GET" in methods else ())

    def decorate(view):
        # csrf_exempt only moves the CSRF check into the wrapper, which applies it to every
        # request a browser could send (see the module docstring).
        @csrf_exempt
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if request.method not in allowed:
                response = error(405, f"method {request.method} not allowed")
                response["Allow"] = ", ".join(allowed)
                return response
            user, by_basic = _authenticate(request)
            if user is None or not user.is_authenticated:
                return error(401, "authentication required (session or HTTP Basic)")
            if not user.has_perm(permission):
                return error(403, f"permission {permission!r} required")
            if request.method not in SAFE_METHODS and _browser_may_have_sent(request, by_basic):
                reason = _csrf_failure(request)
                if reason:
                    return error(403, f"CSRF check failed: {reason}")
            try:
                return view(request, *args, **kwargs)
            except _HANDLED as exc:
                status = next(code for kind, code in ERROR_STATUS if isinstance(exc, kind))
                return error(status, str(exc))

        return wrapper

    return decorate


def _authenticate(request):
    """Return ``(user or None, whether HTTP Basic credentials were given)``."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "basic":
        return getattr(request, "user", None), False
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, True
    username, colon, password = decoded.partition(":")
    user = authenticate(request, username=username, password=password) if colon else None
    if user is not None:
        request.user = user
    return user, True


def _browser_may_have_sent(request, by_basic: bool) -> bool:
    if not by_basic:
        return True  # a session cookie: browsers attach it to forged requests
    return "HTTP_ORIGIN" in request.META or "HTTP_SEC_FETCH_SITE" in request.META


class _CsrfCheck(CsrfViewMiddleware):
    """Django's CSRF check, reporting the reason instead of rendering the failure page."""

    def _reject(self, request, reason):
        return reason


def _csrf_failure(request) -> str | None:
    """Why the request fails Django's CSRF check, or None if it passes."""
    check = _CsrfCheck(lambda request: None)  # type: ignore[arg-type]
    check.process_request(request)
    return check.process_view(request, None, (), {})  # type: ignore[arg-type, return-value]
