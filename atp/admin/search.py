"""The task admin's search box: ATP's search language, plus exact id and uuid lookups."""

import uuid

from django.contrib import messages
from django.db.models import Q

from atp.exceptions import InvalidSearch
from atp.query.search import parse_search_terms, search_q

HELP_TEXT = (
    "Search language of atp.query.search: free text (≥ 3 characters) over name, identifier, "
    "uuid, state, worker, args, kwargs, result and exception; prefixes name: state: worker: "
    'args: kwargs:key=value result:; AND, OR, parentheses, "quoted phrases". '
    "A bare id or uuid finds that task exactly."
)


def exact_condition(term: str) -> Q | None:
    """The exact lookup a bare id or uuid stands for, or None for any other term."""
    if term.isdigit():
        return Q(pk=int(term))
    try:
        return Q(uuid=uuid.UUID(term))
    except ValueError:
        return None


def search_tasks(request, queryset, search_term: str):
    """The tasks matching ``search_term``; a syntax error becomes an admin error message.

    Returns ``(queryset, may_have_duplicates)`` as ``ModelAdmin.get_search_results`` does.
    A bare id or uuid also matches that task exactly (``42`` is too short for free text).
    """
    term = search_term.strip()
    if not term:
        return queryset, False
    exact = exact_condition(term)
    try:
        tree = parse_search_terms(term)
    except InvalidSearch as exc:
        if exact is not None:
            return queryset.filter(exact), False
        messages.error(request, f"Search not understood: {exc}")
        return queryset.none(), False
    condition = search_q(tree)
    if exact is not None:
        condition = exact | condition
    # search_q uses pk__in sub-selects, never joins: no duplicate rows.
    return queryset.filter(condition), False
