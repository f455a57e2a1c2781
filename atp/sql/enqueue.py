"""Enqueueing on PostgreSQL in one round trip: one prepared statement checks the task type and
the queue limit, inserts the tasks and their ``task-sent`` log records and notifies
(``atp.tracker.queueing`` builds its parameters and reads its rows).
"""

import contextlib
import functools
import hashlib
import re
import weakref
from dataclasses import dataclass

from django.db import DatabaseError, connection, transaction

from atp.sql import driver
from atp.sql.locks import enqueue_lock_statements
from atp.sql.notify import NOTIFY_CHANNEL

#: Bytes every heap tuple takes at least: its 23-byte header MAXALIGNed to 24, plus its 4-byte
#: line pointer. A table of N bytes therefore holds at most N / 28 rows, live or dead.
MIN_HEAP_TUPLE_BYTES = 28

#: Waiting tasks of a queue-limit scope, counted only when they could matter. Counting a long
#: queue costs ~6 ms per 100,000 rows; when even a table packed with the smallest possible
#: tuples could not hold enough rows to reach the limit (pg_relation_size is exact and cheap)
#: the count is skipped (0). PostgreSQL evaluates the sub-select only in the ELSE branch.
_COUNT_WAITING = """CASE
        WHEN pg_relation_size('atp_taskinstance') / {min_tuple} + %(adding)s::int <= {limit}
            THEN 0
        ELSE (SELECT count(*) FROM (
            SELECT FROM atp_taskinstance WHERE status = {accepted} AND {scope} LIMIT {limit}
        ) AS scope)
    END"""

#: The waiting tasks a limit applies to: those of every type that shares
#: ATP['MAX_QUEUE_SIZE'] (no max_queue_size of its own), or one type's own.
_SHARED_SCOPE = "type_id IN (SELECT id FROM atp_tasktype WHERE max_queue_size IS NULL)"
_TYPE_SCOPE = "type_id = {type_id}"


@dataclass(frozen=True)
class QueueLimit:
    """A queue limit to check: at most ``size`` waiting tasks of the type ``type_id``, or
    (``type_id`` None) of all the types that share ATP['MAX_QUEUE_SIZE']."""

    size: int
    type_id: int | None = None

    @property
    def lock_id(self) -> int:
        """The second key of the scope's advisory lock (as ``lock_queue_scope``)."""
        return self.type_id or 0


#: One statement: check the task type and the queue limit, insert the tasks and their ``task-sent``
#: log records (and the ``task-pending`` ones of tasks that wait from the start: ``pending`` lists
#: the candidate reasons, "later" only when they are due later; a queue's or type's pause is checked
#: here, in the insert's snapshot), notify. ``rows`` is a JSON array of per-task values; everything
#: else is the same for the whole batch. The type's cached values (``type_*``) are checked against
#: its row in the statement's own snapshot: a type changed or deleted since it was cached inserts
#: nothing (``fresh`` false), and the caller reloads it and tries again. The tasks are inserted in
#: the order of ``rows``, so their ids grow in that order. The result has one row per item (``ord``
#: = position in ``rows``), or a single row with a null ``ord`` when nothing was inserted; ``fits``
#: says whether the batch fitted the queue limit. Every parameter carries its type, so the statement
#: can be prepared as it is.
_ENQUEUE = """WITH checked AS (
    SELECT EXISTS (
        SELECT FROM atp_tasktype
        WHERE id = %(type_id)s::bigint AND identifier = %(type_identifier)s::text
            AND priority = %(type_priority)s::int AND queue = %(type_queue)s::text
            AND max_queue_size IS NOT DISTINCT FROM %(type_max_queue_size)s::int
    ) AS fresh,
    {waiting} AS waiting
), item AS (
    SELECT r.identifier, r.uuid::uuid AS uuid, r.input, r.args, r.kwargs, r.concurrency_key,
        r.unique_key, r.ord
    FROM ROWS FROM (json_to_recordset(%(rows)s::json)
        AS (identifier text, uuid text, input jsonb, args text, kwargs text,
            concurrency_key text, unique_key text)
    ) WITH ORDINALITY AS r (identifier, uuid, input, args, kwargs, concurrency_key,
        unique_key, ord)
    WHERE (SELECT fresh {gate} FROM checked)
){unique}, task AS (
    INSERT INTO atp_taskinstance (type_id, identifier, uuid, status, input, priority, queue,
        run_after, expires, server_id, attempts, retries, parent_id, enqueued_at, updated_at,
        concurrency_key, unique_key)
    SELECT %(type_id)s::bigint, identifier, uuid, {accepted}, input, %(priority)s::int,
        %(queue)s::text, %(run_after)s::timestamptz, %(expires)s::timestamptz, '', 0, 0,
        %(parent_id)s::bigint, %(now)s::timestamptz, %(now)s::timestamptz,
        concurrency_key, unique_key
    FROM {source} ORDER BY ord
    RETURNING id, uuid, unique_key
), log AS (
    INSERT INTO atp_logrecord (instance_id, time, status, message, event, fields)
    SELECT task.id, %(now)s::timestamptz, {accepted}, %(message)s::text, %(event)s::text,
        %(fields)s::jsonb || jsonb_build_object('uuid', item.uuid,
            'identifier', item.identifier, 'args', item.args, 'kwargs', item.kwargs,
            'root_id', COALESCE(%(root_id)s::text, item.uuid::text))
    FROM task JOIN item USING (uuid) ORDER BY item.ord
    RETURNING id, instance_id
), pending AS (
    INSERT INTO atp_logrecord (instance_id, time, status, message, event, fields)
    SELECT log.instance_id, %(now)s::timestamptz, {accepted}, why.message,
        %(pending_event)s::text, why.fields || jsonb_build_object('uuid', task.uuid)
    FROM log JOIN task ON task.id = log.instance_id
    JOIN ROWS FROM (jsonb_to_recordset(%(pending)s::jsonb)
        AS (kind text, message text, fields jsonb)
    ) WITH ORDINALITY AS why (kind, message, fields, ord) ON why.kind = 'later'
        OR (why.kind = 'queue' AND EXISTS (
            SELECT FROM atp_queuepause WHERE queue = %(queue)s::text))
        OR (why.kind = 'type' AND EXISTS (
            SELECT FROM atp_tasktype WHERE id = %(type_id)s::bigint AND paused))
    ORDER BY log.id, why.ord
)
SELECT {result},
    (SELECT pg_notify('{channel}', %(queue)s::text) FROM task LIMIT 1)
FROM {joined}"""

#: The plain statement's result: every item was inserted (or, when the batch did not fit,
#: none: one row with a null ``ord``).
_PLAIN_RESULT = (
    "checked.fresh, checked.waiting, {fits}, item.ord, task.id, log.id, true",
    "checked LEFT JOIN (item JOIN task USING (uuid) JOIN log ON log.instance_id = task.id) ON true",
)

#: With unique keys (``atp.tracker.unique``): ``held`` finds the task that holds each key
#: now (not ended, or enqueued since ``unique_since``). The statement runs after the keys'
#: advisory locks were granted (statements of their own, sent first), so its snapshot holds
#: every task another enqueuer of these keys committed. Only the first item of a key that no
#: task holds is inserted (``new``); every item's row gives the id of its key's task and
#: whether this statement created it. A batch whose every item is held inserts nothing and
#: fits any queue.
_UNIQUE = """, held AS (
    SELECT DISTINCT ON (t.unique_key) t.unique_key, t.id FROM atp_taskinstance AS t
    WHERE t.type_id = %(type_id)s::bigint
        AND t.unique_key IN (SELECT unique_key FROM item WHERE unique_key IS NOT NULL)
        AND (t.status IN ({held}) OR t.enqueued_at >= %(unique_since)s::timestamptz)
    ORDER BY t.unique_key, t.id DESC
), new AS (
    SELECT item.* FROM item
    WHERE item.unique_key IS NULL OR (
        item.unique_key NOT IN (SELECT unique_key FROM held)
        AND item.ord = (SELECT min(i.ord) FROM item AS i WHERE i.unique_key = item.unique_key))
), counted AS (
    SELECT count(*) AS adding FROM new
), admitted AS (
    SELECT new.* FROM new WHERE (SELECT adding = 0 OR {fits} FROM checked, counted)
)"""
_UNIQUE_RESULT = (
    "checked.fresh, checked.waiting, counted.adding = 0 OR {fits}, item.ord,"
    " COALESCE(own.id, held.id, (SELECT first.id FROM task AS first"
    " WHERE first.unique_key = item.unique_key)), log.id, own.id IS NOT NULL",
    "checked CROSS JOIN counted LEFT JOIN (item LEFT JOIN task AS own USING (uuid)"
    " LEFT JOIN log ON log.instance_id = own.id"
    " LEFT JOIN held ON held.unique_key = item.unique_key) ON true",
)

_PARAMETER = re.compile(r"%\((\w+)\)s")


@dataclass(frozen=True)
class _Statement:
    """One variant of the enqueue statement, as plain SQL and as a prepared statement."""

    sql: str  # the statement with %(name)s placeholders
    name: str  # its prepared statement's name (the text's hash: a changed text, a new name)
    prepare: str  # PREPARE name AS ... with $n placeholders
    execute: str  # EXECUTE name(%(a)s, ...)


@functools.lru_cache(maxsize=1024)
def _enqueue_statement(limit: QueueLimit | None, unique: bool = False) -> _Statement:
    """The enqueue statement that checks ``limit`` (None: no limit), with unique keys or not.

    The limit's scope and size are written into the statement, not passed as parameters:
    its prepared plan then counts with the same index a fresh plan would, so PostgreSQL
    keeps the prepared (generic) plan instead of planning every execution anew. That makes
    one statement per type with a limit of its own, plus one for the shared limit (twice:
    a batch with unique keys takes the variant that looks for their tasks first).
    """
    from atp.models import UNIQUE_HELD, Status  # not at import time: the app registry

    adding = "adding" if unique else "%(adding)s::int"
    if limit is None:
        waiting, fits = "0", "true"
    else:
        size = int(limit.size)
        scope = _SHARED_SCOPE
        if limit.type_id is not None:
            scope = _TYPE_SCOPE.format(type_id=int(limit.type_id))
        waiting = _COUNT_WAITING.format(
            min_tuple=MIN_HEAP_TUPLE_BYTES, accepted=int(Status.ACCEPTED), scope=scope, limit=size
        )
        fits = f"waiting + {adding} <= {size}"
    if unique:
        held = ", ".join(str(int(status)) for status in sorted(UNIQUE_HELD))
        parts = {"gate": "", "unique": _UNIQUE.format(held=held, fits=fits), "source": "admitted"}
        result, joined = _UNIQUE_RESULT
    else:
        parts = {"gate": f"AND {fits}", "unique": "", "source": "item"}
        result, joined = _PLAIN_RESULT
    text = _ENQUEUE.format(
        waiting=waiting,
        accepted=int(Status.ACCEPTED),
        channel=NOTIFY_CHANNEL,
        result=result.format(fits=fits),
        joined=joined,
        **parts,
    )
    names = list(dict.fromkeys(_PARAMETER.findall(text)))
    name = f"atp_enqueue_{hashlib.sha1(text.encode()).hexdigest()[:12]}"  # noqa: S324 (a name)
    return _Statement(
        sql=text,
        name=name,
        prepare=f"PREPARE {name} AS "
        + _PARAMETER.sub(lambda match: f"${names.index(match.group(1)) + 1}", text),
        execute=f"EXECUTE {name}(" + ", ".join(f"%({n})s" for n in names) + ")",
    )


#: Per open connection (PostgreSQL keeps prepared statements for the session): the names of
#: the enqueue statements prepared on it, or None once it must not use prepared statements.
_prepared: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

#: SQLSTATEs that mean a session's prepared statements are not what this process thinks:
#: gone (DISCARD ALL, DEALLOCATE) or already there (a transaction-pooling proxy such as
#: PgBouncer hands each transaction another server session).
_PREPARED_ERRORS = {"26000", "42P05"}


def enqueue_rows(limit: QueueLimit | None, params: dict, unique_keys=None) -> list[tuple]:
    """Run the enqueue statement; return its rows
    ``(fresh, waiting, fits, ord, task id, log id, created)``.

    With a ``limit``, the advisory lock of its scope is taken first, by a statement of its
    own in the same transaction: under READ COMMITTED each statement sees what committed
    before it started, so only a count that starts after the lock is granted sees the
    tasks of the enqueuer that held it. ``unique_keys`` (``(type id, keys)``) adds the
    unique keys' locks the same way, before the scope's (the order every enqueuer takes
    them in), and the statement variant that answers a held key with its task instead of a
    new one. Inside the caller's transaction they run in a savepoint, so an error leaves the
    caller's transaction usable.

    In autocommit (an enqueue outside any transaction: the common call from a view without
    ATOMIC_REQUESTS, a script, a schedule), the locks and the statement go in one
    ``execute``, one round trip instead of four (BEGIN, locks, statement, COMMIT): the
    simple query protocol runs the statements of one query as one implicit transaction,
    each with its own snapshot, and the transaction-scoped locks last until it ends. Where
    the driver sends one statement per query (psycopg 3 with server-side binding), each
    statement is sent alone in an explicit transaction.

    The statement is prepared once per connection: planning it costs about as much as
    running it. Where prepared statements do not survive between transactions (a pooling
    proxy), the connection falls back to sending the plain statement.
    """
    statement = _enqueue_statement(limit, unique=unique_keys is not None)
    connection.ensure_connection()
    prepared = _prepared.setdefault(connection.connection, set())
    locks = enqueue_lock_statements(limit.lock_id if limit else None, unique_keys)
    try:
        if locks and connection.get_autocommit() and not connection.in_atomic_block:
            with connection.cursor() as cursor:
                if driver.runs_several_statements(cursor):
                    text = "; ".join([*locks, _statement_text(cursor, statement, prepared)])
                    cursor.execute(text, params)
                    driver.to_last_result(cursor)
                    return [row[:7] for row in cursor.fetchall()]
        scope = transaction.atomic() if locks else _savepoint_in_transaction()
        with scope, connection.cursor() as cursor:
            for lock in locks:
                cursor.execute(lock)  # one statement per execute: see the docstring
            cursor.execute(_statement_text(cursor, statement, prepared), params)
            return [row[:7] for row in cursor.fetchall()]
    except DatabaseError as exc:
        if prepared is None or driver.sqlstate(exc) not in _PREPARED_ERRORS:
            raise
    _prepared[connection.connection] = None
    return enqueue_rows(limit, params, unique_keys)


def _statement_text(cursor, statement: _Statement, prepared: set | None) -> str:
    """``EXECUTE`` of the prepared ``statement`` (preparing it first on this connection), or
    the plain statement where the connection must not use prepared statements."""
    if prepared is None:
        return statement.sql
    if statement.name not in prepared:
        cursor.execute(statement.prepare)
        prepared.add(statement.name)  # at once: a PREPARE is never rolled back
    return statement.execute


def _savepoint_in_transaction():
    """A savepoint inside a transaction; nothing in autocommit, where a statement is one."""
    if connection.get_autocommit() and not connection.in_atomic_block:
        return contextlib.nullcontext()
    return transaction.atomic()
