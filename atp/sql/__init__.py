"""The statements ATP needs beyond the ORM, each in one named module (most are PostgreSQL's).

- ``claim``: claim and start a batch of due tasks in one statement (``CLAIM``)
- ``finish``: end a batch of succeeded attempts as FINISHED (``FINISH``)
- ``log_records``: a batch's log records in one INSERT (``INSERT_LOG``)
- ``cleanup``: delete a batch of retired tasks with what points at them (``DELETE_RETIRED``)
- ``enqueue``: tasks and their log records in one prepared statement (``enqueue_rows``)
- ``locks``: advisory locks (queue limits, unique keys, rate limits), a table's settled id
- ``notify``: LISTEN/NOTIFY that wakes idle daemons
- ``pending``: the ``task-pending`` events of a pause in one INSERT … SELECT
- ``stats``: row and value estimates from PostgreSQL's statistics (the admin's lists)
- ``vendor``: which database this is; ``driver``: where psycopg 3 and psycopg2 differ;
  ``errors``: which database errors mean "busy, try again"

The batch statements are run, and their rows turned into objects, by ``atp.tracker.batch_sql``
beside the ORM paths they shortcut. The tracker calls the functions below through this package
(``sql.is_postgresql()``, ``sql.enqueue_rows(…)``), so a test that replaces one here switches
the tracker's path.
"""

from atp.sql.claim import order_by
from atp.sql.enqueue import MIN_HEAP_TUPLE_BYTES, QueueLimit, enqueue_rows
from atp.sql.locks import (
    ADVISORY_LOCK_CLASS,
    RATE_LIMIT_LOCK_CLASS,
    RATE_LIMIT_LOCK_WAIT,
    UNIQUE_LOCK_CLASS,
    lock_queue_scope,
    lock_rate_limits,
    lock_unique_keys,
    settled_id,
    unique_lock_ids,
)
from atp.sql.notify import (
    NOTIFY_CHANNEL,
    PAUSES_CHANGED,
    notify,
    notify_enqueued,
    notify_pauses,
)
from atp.sql.stats import column_frequencies, estimated_table_rows, planned_rows
from atp.sql.vendor import is_postgresql

__all__ = [
    "ADVISORY_LOCK_CLASS",
    "MIN_HEAP_TUPLE_BYTES",
    "NOTIFY_CHANNEL",
    "PAUSES_CHANGED",
    "RATE_LIMIT_LOCK_CLASS",
    "RATE_LIMIT_LOCK_WAIT",
    "UNIQUE_LOCK_CLASS",
    "QueueLimit",
    "column_frequencies",
    "enqueue_rows",
    "estimated_table_rows",
    "is_postgresql",
    "lock_queue_scope",
    "lock_rate_limits",
    "lock_unique_keys",
    "notify",
    "notify_enqueued",
    "notify_pauses",
    "order_by",
    "planned_rows",
    "settled_id",
    "unique_lock_ids",
]
