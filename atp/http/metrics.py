"""``GET atp/metrics``: ATP's numbers in Prometheus's text format (``atp.query.metrics``).

Who may read: a request with ``Authorization: Bearer <ATP['METRICS_TOKEN']>`` (what a
Prometheus scrape job sends), or a Django user with ``atp.view_taskinstance`` (session or
HTTP Basic, as for the JSON API). Anything else gets the API's JSON 401/403.
"""

import hmac

from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe

from atp.conf import settings
from atp.http.auth import READ, api_view
from atp.query import metrics as numbers


def _token_matches(request) -> bool:
    token = settings.METRICS_TOKEN
    scheme, _, given = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if not token or scheme.lower() != "bearer":
        return False
    # Constant time: the token must not leak through response timing.
    return hmac.compare_digest(given.strip().encode(), str(token).encode())


@api_view(READ)
def _for_users(request):
    return _reply()


@csrf_exempt
@require_safe
def metrics(request):
    """The metrics page for a scrape job with the token, or for a user who may view tasks."""
    if _token_matches(request):
        return _reply()
    return _for_users(request)


def _reply() -> HttpResponse:
    return HttpResponse(numbers.render(), content_type=numbers.CONTENT_TYPE)
