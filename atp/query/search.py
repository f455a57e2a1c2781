"""Flower-style task search: a small query language, parsed into a tree, evaluated in SQL.

Syntax (Flower's current rules)::

    resize state:FAILURE                    terms next to each other: AND
    name:resize AND (state:FAILURE OR state:REVOKED)
    kwargs:path=/data/a.tif worker:node-1 result:"no space left"

- Prefixes ``name:`` ``state:`` ``worker:`` ``args:`` ``kwargs:key=value`` ``result:``; any
  other term is free text. ``state:`` (Celery or ATP names) and ``kwargs:key=value`` match
  exactly; every other term is a case-insensitive substring of at least 3 characters.
- Free text looks in the task's name, identifier, uuid, state, worker, args, kwargs, result
  and exception.
- ``AND`` and ``OR`` (upper case) and parentheses; AND binds tighter than OR. ``NOT`` and a
  leading ``-`` are refused rather than silently searched for.
- Double quotes keep a phrase together (``"disk full"``, ``result:"disk full"``); inside them
  ``\\"`` is a quote. A fully quoted term is always free text (``"state:x"`` is not a prefix).
- At most 2048 characters, 128 tokens and 5 levels of parentheses.

Anything else raises ``InvalidSearch`` (an ``InvalidInput``) naming the problem and where it is.

args, kwargs and result are Celery's repr strings, read from the task's ``task-sent`` and
``task-succeeded`` log records (the tracker writes them), so a search sees what Flower shows.
Free text finds the identifier and uuid in ``task-sent``, never on the task's row (see
``log_text``), and a daemon by the task row's ``server_id`` (the daemon that holds it or held it
last; see ``_worker_ids``).
"""

import math
import re
import uuid
from dataclasses import dataclass
from functools import reduce
from operator import and_, or_

from django.db import connection
from django.db.models import BooleanField, Expression, Func, Q, TextField, Value
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.db.models.functions import Coalesce, Lower, StrIndex
from django.db.models.lookups import Contains, GreaterThan

from atp import events, validation
from atp.exceptions import InvalidInput, InvalidSearch
from atp.models import LogRecord, Status, TaskInstance, TaskType, Worker
from atp.query.states import CELERY_STATE, statuses_for

PREFIXES = ("name", "state", "worker", "args", "kwargs", "result")
MAX_LENGTH = 2048
MAX_TOKENS = 128
MAX_DEPTH = 5
#: Shortest substring term: shorter ones match nearly everything and no trigram index helps.
MIN_SUBSTRING = 3
#: Log records whose fields free text searches (see the pg_trgm index of migration 0013).
#: Not ``task-received``: one is written per claim, and indexing it cost the drain about 9 %.
SEARCHED_EVENTS = (events.TASK_SENT, events.TASK_SUCCEEDED, events.TASK_FAILED)
#: Their fields it searches: the call and its end (reprs), and the task's names: identifier and
#: uuid (``task-sent``).
SEARCHED_FIELDS = ("args", "kwargs", "result", "exception", "identifier", "uuid")


@dataclass(frozen=True)
class Term:
    """One search term: ``field`` is a prefix name or ``"any"`` (free text).

    ``value`` is the text; for ``kwargs`` a ``(key, value)`` pair; for ``state`` the
    upper-cased state name.
    """

    field: str
    value: object


@dataclass(frozen=True)
class And:
    """All of ``terms`` match."""

    terms: tuple


@dataclass(frozen=True)
class Or:
    """At least one of ``terms`` matches."""

    terms: tuple


# --- parsing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    kind: str  # "(", ")", "AND", "OR" or "term"
    position: int
    term: Term | None = None


_SPACE = re.compile(r"\s+")


def parse_search_terms(raw_search_value) -> Term | And | Or | None:
    """Parse a search query into a tree of ``Term``, ``And`` and ``Or``; None for no query.

    Raises InvalidSearch for a malformed query (unbalanced parentheses or quotes, a dangling
    operator, NOT, an unknown state, a too short term, a too long query).
    """
    if raw_search_value is None:
        return None
    if not isinstance(raw_search_value, str):
        raise InvalidSearch(f"a search query must be a string, not {raw_search_value!r}")
    if len(raw_search_value) > MAX_LENGTH:
        raise InvalidSearch(
            f"search query is {len(raw_search_value)} characters long; the limit is {MAX_LENGTH}"
        )
    if not validation.storable(raw_search_value):
        # PostgreSQL cannot even compare such text: it would fail inside the query.
        raise InvalidSearch("a search query cannot contain a NUL character or a lone surrogate")
    tokens = _tokenize(raw_search_value)
    if not tokens:
        return None
    if len(tokens) > MAX_TOKENS:
        raise InvalidSearch(f"search query has {len(tokens)} tokens; the limit is {MAX_TOKENS}")
    return _Parser(tokens).parse()


def _tokenize(text: str) -> list[_Token]:
    tokens = []
    position = 0
    while position < len(text):
        space = _SPACE.match(text, position)
        if space:
            position = space.end()
        elif text[position] in "()":
            tokens.append(_Token(text[position], position))
            position += 1
        else:
            token, position = _word(text, position)
            tokens.append(token)
    return tokens


def _word(text: str, start: int) -> tuple[_Token, int]:
    """Read one word (possibly with quoted parts) from ``start``; return it and the end."""
    parts: list[str] = []
    head = None  # the unquoted text before the first quote: where a prefix may be
    position = start
    while position < len(text) and not text[position].isspace() and text[position] not in "()":
        if text[position] == '"':
            if head is None:
                head = "".join(parts)
            phrase, position = _quoted(text, position)
            parts.append(phrase)
        else:
            parts.append(text[position])
            position += 1
    word = "".join(parts)
    quoted = head is not None
    head = word if head is None else head
    if not quoted:
        if word in ("AND", "OR"):
            return _Token(word, start), position
        if word == "NOT":
            raise InvalidSearch(f"NOT (at position {start}) is not supported; search for terms")
        if word.startswith("-"):
            raise InvalidSearch(
                f"'{word}' (at position {start}): negation with '-' is not supported; "
                f'quote the term ("{word}") to search for a leading dash'
            )
    return _Token("term", start, _term(word, head, start)), position


def _quoted(text: str, start: int) -> tuple[str, int]:
    """Read a double-quoted phrase starting at ``start``; ``\\"`` and ``\\\\`` are escapes."""
    chars = []
    position = start + 1
    while position < len(text):
        char = text[position]
        if char == "\\" and position + 1 < len(text) and text[position + 1] in '"\\':
            chars.append(text[position + 1])
            position += 2
        elif char == '"':
            return "".join(chars), position + 1
        else:
            chars.append(char)
            position += 1
    raise InvalidSearch(f"unterminated quote starting at position {start}")


def _term(word: str, head: str, position: int) -> Term:
    """Build the term of one word; ``head`` is its unquoted start, where a prefix can be."""
    prefix, colon, _ = head.partition(":")
    field = prefix.lower() if colon and prefix.lower() in PREFIXES else "any"
    value = word if field == "any" else word[len(prefix) + 1 :]
    where = f"'{word}' (at position {position})"
    if not value.strip():
        raise InvalidSearch(f"{where} has no value after '{prefix}:'")
    if field == "state":
        try:
            statuses_for(value)
        except InvalidInput as exc:
            raise InvalidSearch(f"{where}: {exc}") from None
        return Term("state", value.strip().upper())
    if field == "kwargs":
        key, equals, expected = value.partition("=")
        if not equals or not key.strip():
            raise InvalidSearch(f"{where}: kwargs: takes key=value, for example kwargs:path=a.tif")
        return Term("kwargs", (key.strip(), expected.strip()))
    if len(value) < MIN_SUBSTRING:
        raise InvalidSearch(
            f"{where}: search text must be at least {MIN_SUBSTRING} characters long"
        )
    return Term(field, value)


class _Parser:
    """Recursive descent over the tokens: ``or := and (OR and)*``, ``and := unit (AND? unit)*``."""

    def __init__(self, tokens: list[_Token]):
        self.tokens = tokens
        self.position = 0

    def parse(self):
        """Parse the whole token list into a tree; raise InvalidSearch on leftovers."""
        tree = self._or(depth=0)
        if self.position < len(self.tokens):
            token = self.tokens[self.position]
            raise InvalidSearch(f"unbalanced ')' at position {token.position}")
        return tree

    def _peek(self) -> _Token | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def _or(self, depth):
        terms = [self._and(depth)]
        while (token := self._peek()) is not None and token.kind == "OR":
            self.position += 1
            terms.append(self._and(depth))
        return terms[0] if len(terms) == 1 else Or(tuple(terms))

    def _and(self, depth):
        terms = [self._unit(depth)]
        while (token := self._peek()) is not None and token.kind not in (")", "OR"):
            if token.kind == "AND":
                self.position += 1
            terms.append(self._unit(depth))
        return terms[0] if len(terms) == 1 else And(tuple(terms))

    def _unit(self, depth):
        token = self._peek()
        if token is None:
            last = self.tokens[-1]
            raise InvalidSearch(f"search query ends after '{last.kind}'; a term is missing")
        self.position += 1
        if token.kind == "term":
            return token.term
        if token.kind == "(":
            if depth + 1 > MAX_DEPTH:
                raise InvalidSearch(
                    f"parentheses nest deeper than {MAX_DEPTH} levels at position {token.position}"
                )
            tree = self._or(depth + 1)
            closing = self._peek()
            if closing is None or closing.kind != ")":
                raise InvalidSearch(f"'(' at position {token.position} is never closed")
            self.position += 1
            return tree
        if token.kind == ")":
            raise InvalidSearch(f"unexpected ')' at position {token.position}; a term is missing")
        raise InvalidSearch(f"{token.kind} at position {token.position} needs a term on each side")


# --- evaluation in SQL ------------------------------------------------------------------


class SearchText(Func):
    """``LOWER(a || ' ' || b || …)``: one lower-cased text per row for substring search.

    On PostgreSQL, migration 0002 indexes exactly these expressions with pg_trgm, so a
    ``LIKE '%term%'`` on them is an index scan. Change them only together with the index.
    """

    template = "LOWER(%(expressions)s)"
    arg_joiner = " || ' ' || "
    output_field = TextField()


def log_text() -> SearchText:
    """The searchable text of a log record: the fields of ``SEARCHED_FIELDS`` it has.

    The task's own names are searched here, not on its row: a row is rewritten into every
    index of the task table at each status change, a log record is written once.
    """
    return SearchText(
        *(Coalesce(KeyTextTransform(key, "fields"), Value("")) for key in SEARCHED_FIELDS)
    )


_WORD = re.compile(r"[^\W_]+")  # what pg_trgm takes trigrams from: runs of letters and digits


def contains(text: SearchText, needle: str) -> Q:
    """``needle`` (lower case) occurs in ``text``, in the form a trigram index serves best.

    pg_trgm looks up every trigram of the pattern; those of common words ("job" in
    "job-00654321", a prefix every identifier shares) match nearly every row and cost more
    than all the others together. So the index is asked only for the longest word of the
    needle, and the whole needle is checked on the few rows found (``STRPOS``, which no
    index serves, so the planner keeps it as a filter).
    """
    words = _WORD.findall(needle)
    key = max(words, key=len) if words else ""
    if len(key) < MIN_SUBSTRING or key == needle:
        return Q(Contains(text, needle))
    return Q(Contains(text, key)) & Q(GreaterThan(StrIndex(text, Value(needle)), 0))


def search_q(tree) -> Q:
    """The ``Q`` selecting the tasks that match a parsed search tree (None: all tasks)."""
    if tree is None:
        return Q()
    if isinstance(tree, And):
        return reduce(and_, (search_q(term) for term in tree.terms))
    if isinstance(tree, Or):
        return reduce(or_, (search_q(term) for term in tree.terms))
    return _TERM_Q[tree.field](tree.value)


def satisfies_search_terms(task, search_terms) -> bool:
    """Whether one task matches a search (a query string or a parsed tree), checked in SQL.

    ``task`` is a TaskInstance or a task id. Uses the same SQL as ``iter_tasks(search=…)``.
    """
    if isinstance(search_terms, str):
        search_terms = parse_search_terms(search_terms)
    if search_terms is None:
        return True
    task_id = task.pk if isinstance(task, TaskInstance) else task
    return TaskInstance.objects.filter(pk=task_id).filter(search_q(search_terms)).exists()


def _in_log(event: str, field: str, needle: str) -> Q:
    """Tasks whose ``event`` record has ``needle`` in its ``field``.

    The first condition is the indexed one (a trigram scan on PostgreSQL); the second
    keeps the match to the one field.
    """
    return Q(pk__in=_records_with(event, field, needle).values("instance_id"))


def _records_with(event: str, field: str, needle: str):
    return LogRecord.objects.filter(
        contains(log_text(), needle),
        Contains(Lower(KeyTextTransform(field, "fields")), needle),
        event=event,
    )


def _name_q(value: str) -> Q:
    # Types are few: resolve them now, so the task query is a plain indexed type_id IN (…).
    type_ids = TaskType.objects.filter(identifier__icontains=value).values_list("pk", flat=True)
    return Q(type_id__in=list(type_ids))


def _state_q(value: str) -> Q:
    return Q(status__in=sorted(statuses_for(value)))


def _worker_ids(value: str) -> list[str]:
    """Daemons whose server id or host name contains ``value``: the registered ones, and
    the server ids of the task rows (a claimer that never registered a Worker row)."""
    workers = Worker.objects.filter(Q(hostname__icontains=value) | Q(server_id__icontains=value))
    needle = value.lower()
    unregistered = [server_id for server_id in _task_server_ids() if needle in server_id.lower()]
    return sorted({*workers.values_list("server_id", flat=True), *unregistered})


#: The distinct server ids of the task rows, one index probe each (a loose index scan): the
#: (server_id, received_at, id) index of migration 0002 is walked from one id to the next
#: instead of over every task. Server ids are few (one per daemon start), tasks are many.
_DISTINCT_SERVER_IDS = """
WITH RECURSIVE ids(server_id) AS (
    SELECT min(server_id) FROM atp_taskinstance WHERE server_id > ''
    UNION ALL
    SELECT (SELECT min(server_id) FROM atp_taskinstance WHERE server_id > ids.server_id)
    FROM ids WHERE ids.server_id IS NOT NULL
)
SELECT server_id FROM ids WHERE server_id IS NOT NULL
"""


def _task_server_ids() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(_DISTINCT_SERVER_IDS)
        return [server_id for (server_id,) in cursor.fetchall()]


def _worker_q(value: str) -> Q:
    return Q(server_id__in=_worker_ids(value))


def _args_q(value: str) -> Q:
    return _in_log(events.TASK_SENT, "args", value.lower())


def _result_q(value: str) -> Q:
    return _in_log(events.TASK_SUCCEEDED, "result", value.lower())


def _kwargs_q(pair) -> Q:
    key, text = pair
    candidates = _json_candidates(text)
    if connection.vendor == "postgresql":
        # Containment (@>) is what the GIN jsonb_path_ops index on input serves.
        return reduce(or_, (Q(input__contains={key: value}) for value in candidates))
    return reduce(or_, (Q(_KeyEquals("input", key, value)) for value in candidates))


class _KeyEquals(Expression):
    """``json_field -> key = value`` for any key, even one with ``__`` or a lookup's name.

    Built at resolve time so the lookup sees the JSONField and encodes ``value`` as JSON,
    exactly as ``filter(input__key=value)`` would.
    """

    conditional = True
    output_field = BooleanField()

    def __init__(self, json_field: str, key: str, value):
        super().__init__()
        self.json_field, self.key, self.value = json_field, key, value

    def resolve_expression(self, *args, **kwargs):
        lhs = KeyTransform(self.key, self.json_field).resolve_expression(*args, **kwargs)
        return lhs.get_lookup("exact")(lhs, self.value)


def _json_candidates(text: str) -> list:
    """The JSON values a ``kwargs:key=text`` term stands for: the string, and what it spells.

    ``5`` matches 5 and "5"; ``True``/``true`` match true and the string; quotes are stripped.
    Only numbers JSON and both databases hold are candidates: not ``nan`` or ``inf`` (no
    JSON value), not integers beyond 64 bits (SQLite cannot bind them).
    """
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return [text[1:-1]]
    candidates: list = [text]
    literals = {"true": True, "false": False, "none": None, "null": None}
    if text.lower() in literals:
        candidates.append(literals[text.lower()])
    elif _INTEGER.fullmatch(text):
        whole = int(text)
        if -(2**63) <= whole < 2**63:
            candidates.append(whole)
    else:
        try:
            number = float(text)
        except ValueError:
            return candidates
        if math.isfinite(number):
            candidates.append(number)
    return candidates


#: An integer as JSON writes it (``int()`` would also take ``"1_000"`` and ``"٣"``).
_INTEGER = re.compile(r"-?[0-9]{1,30}")


def _free_text_q(value: str) -> Q:
    needle = value.lower()
    # What the task row answers by its indexed columns; its names are in the log's text.
    task_side = []
    type_ids = list(
        TaskType.objects.filter(identifier__icontains=value).values_list("pk", flat=True)
    )
    if type_ids:
        task_side.append(Q(type_id__in=type_ids))
    states = [
        status.value
        for status in Status
        if needle.upper() in CELERY_STATE[status] or needle.upper() in status.label
    ]
    if states:
        task_side.append(Q(status__in=states))
    worker_ids = _worker_ids(value)
    if worker_ids:
        task_side.append(Q(server_id__in=worker_ids))
    exact_uuid = _as_uuid(value)
    if exact_uuid is not None:
        task_side.append(Q(uuid=exact_uuid))
    records = (
        LogRecord.objects.filter(contains(log_text(), needle), event__in=SEARCHED_EVENTS)
        .order_by()
        .values("instance_id")
    )
    if not task_side:
        return Q(pk__in=records)
    # One UNION of indexed scans (task columns, log text), then a semi-join: an OR across
    # the two tables would make PostgreSQL scan every task.
    tasks = TaskInstance.objects.filter(reduce(or_, task_side)).order_by().values("pk")
    return Q(pk__in=tasks.union(records, all=True))


def _as_uuid(value: str):
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        return None


_TERM_Q = {
    "any": _free_text_q,
    "name": _name_q,
    "state": _state_q,
    "worker": _worker_q,
    "args": _args_q,
    "kwargs": _kwargs_q,
    "result": _result_q,
}
