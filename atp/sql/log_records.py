"""The log records of a batch (claim or finish) in one INSERT on PostgreSQL."""

#: Log records of a batch, one array per column: psycopg2 adapts six lists in C, where a
#: VALUES list would cost a Python-level mogrify per row. ``WITH ORDINALITY`` keeps the
#: rows (and so their ids) in the order given.
INSERT_LOG = """
INSERT INTO atp_logrecord (instance_id, time, status, message, event, fields)
SELECT instance_id, time, status, message, event, fields::jsonb
FROM unnest(%s::bigint[], %s::timestamptz[], %s::smallint[], %s::text[], %s::text[], %s::text[])
    WITH ORDINALITY AS record(instance_id, time, status, message, event, fields, position)
ORDER BY position
RETURNING id
"""
