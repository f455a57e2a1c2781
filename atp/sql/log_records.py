"""The log records of a batch (claim or finish) in one INSERT on PostgreSQL."""

#: Log records of a batch as one JSON array of ``[task id, time, status, message, event,
#: fields]`` rows. One parameter, parsed once by the server: psycopg2 writes a Python list
#: as an ``ARRAY[…]`` of one literal per element, and parsing and planning six such arrays
#: of a few hundred literals each cost more than inserting the rows (4.0 → 2.5 ms for the
#: 200 records of a claim of 100). ``WITH ORDINALITY`` keeps the rows (and so their ids) in
#: the order given.
INSERT_LOG = """
INSERT INTO atp_logrecord (instance_id, time, status, message, event, fields)
SELECT (r ->> 0)::bigint, (r ->> 1)::timestamptz, (r ->> 2)::smallint, r ->> 3, r ->> 4, r -> 5
FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS record(r, position)
ORDER BY position
RETURNING id
"""
