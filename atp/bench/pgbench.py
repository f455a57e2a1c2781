"""The machine's raw commit rate, measured by ``pgbench`` beside ATP's own figures.

One single-row UPDATE per transaction (autocommit), the shape of a task's status flip, by 1
and by 4 clients for ``seconds`` each, on a scratch database of the same server
(``<database>_pgbench``, created and dropped here). A reader compares ATP's rates with
this line to compare runs across machines. PostgreSQL only; needs the ``pgbench`` program.
"""

import os
import re
import shutil
import subprocess
import tempfile

from django.db import connection

#: The transaction pgbench repeats: one row, one commit.
SCRIPT = """\\set aid random(1, 100000 * :scale)
UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;
"""
CLIENTS = (1, 4)


def _env_and_args() -> tuple[dict, list[str]]:
    params = connection.settings_dict
    env = {**os.environ}
    if params.get("PASSWORD"):
        env["PGPASSWORD"] = params["PASSWORD"]
    args = ["-h", params.get("HOST") or "localhost", "-p", str(params.get("PORT") or 5432)]
    args += ["-U", params.get("USER") or "postgres"]
    return env, args


def measure(seconds: float = 5.0) -> dict:
    """Transactions per second of pgbench's single-row UPDATE, by client count."""
    program, dropdb, createdb = (shutil.which(name) for name in ("pgbench", "dropdb", "createdb"))
    if connection.vendor != "postgresql" or program is None or dropdb is None or createdb is None:
        return {"skipped": "needs PostgreSQL and the pgbench, createdb and dropdb programs"}
    env, server = _env_and_args()
    scratch = f"{connection.settings_dict['NAME']}_pgbench"[:63]
    subprocess.run([dropdb, "--if-exists", *server, scratch], env=env, check=True)
    subprocess.run([createdb, *server, scratch], env=env, check=True)
    try:
        subprocess.run(
            [program, "-i", "-q", "-s", "1", *server, scratch],
            env=env,
            check=True,
            capture_output=True,
        )
        with tempfile.NamedTemporaryFile("w", suffix=".sql") as script:
            script.write(SCRIPT)
            script.flush()
            rates = {}
            for clients in CLIENTS:
                done = subprocess.run(
                    [program, "-n", "-c", str(clients), "-j", str(clients)]
                    + ["-T", str(int(seconds)), "-f", script.name, *server, scratch],
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                )
                rates[f"c{clients}_tps"] = _tps(done.stdout)
        return rates
    finally:
        subprocess.run([dropdb, "--if-exists", *server, scratch], env=env, check=False)


def _tps(output: str) -> float:
    """The ``tps = …`` figure of pgbench's report."""
    match = re.search(r"tps = ([0-9.]+)", output)
    if match is None:
        raise RuntimeError(f"pgbench printed no tps figure:\n{output}")
    return float(match.group(1))
