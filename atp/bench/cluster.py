"""A private PostgreSQL cluster: ``initdb`` and ``pg_ctl`` into a temporary directory.

For the soak (``atp_soak``), which restarts the database, and for the tests that stop or
restart it (``tests/support/pg_cluster.py``): never the shared cluster other programs use.
``PgCluster`` runs the newest ``/usr/lib/postgresql/<version>/bin`` on a free port of its own.
PostgreSQL refuses to run as root: as root the commands run as the ``postgres`` OS user, in
a directory that user owns.
"""

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.db import connections

#: Where Debian's PostgreSQL packages put the server programs.
PG_ROOT = Path("/usr/lib/postgresql")
#: Server settings of a throw-away cluster: fast (no fsync) and small.
SERVER_OPTIONS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "32MB",
    "max_connections": "100",
}


def pg_bin() -> Path:
    """The ``bin`` directory of the newest installed PostgreSQL."""
    versions = sorted(
        (path for path in PG_ROOT.glob("*/bin") if (path / "initdb").exists()),
        key=lambda path: [int(part) for part in re.findall(r"\d+", path.parent.name)],
    )
    if not versions:
        raise FileNotFoundError(f"no PostgreSQL server programs (initdb) under {PG_ROOT}")
    return versions[-1]


def free_port() -> int:
    """A TCP port nothing listens on now (the kernel's choice)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PgCluster:
    """One private PostgreSQL cluster: ``init``, ``start``, ``stop``, ``restart``, ``destroy``."""

    def __init__(self, root: Path | None = None, port: int | None = None):
        self.bin = pg_bin()
        self.port = port or free_port()
        self.as_postgres = os.geteuid() == 0  # initdb and postgres refuse to run as root
        self.root = Path(root or tempfile.mkdtemp(prefix="atp-pg-"))
        self.data = self.root / "data"
        self.logfile = self.root / "server.log"
        if self.as_postgres:
            shutil.chown(self.root, user="postgres", group=pwd.getpwnam("postgres").pw_gid)

    def _run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bin / program), *args]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(
            command, cwd=self.root, capture_output=True, text=True, check=check, timeout=120
        )

    def init(self) -> "PgCluster":
        """Create the cluster's files (superuser ``postgres``, trust authentication)."""
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--no-sync", "--locale=C")  # fmt: skip
        return self

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = " ".join(f"-c {key}={value}" for key, value in SERVER_OPTIONS.items())
        options += f" -p {self.port} -k {self.root}"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-w", "-t", "60",
                  "-o", options, "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect clients; ``immediate``: a crash)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self) -> None:
        """Stop (fast) and start again on the same port."""
        self.stop()
        self.start()

    def running(self) -> bool:
        """Whether the server runs now."""
        return self._run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def url(self, database: str = "postgres") -> str:
        """A ``DATABASE_URL`` for ``database`` on this cluster."""
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` with psql and return its unaligned output."""
        done = self._run("psql", "-X", "-q", "-At", "-h", "127.0.0.1", "-p", str(self.port),
                         "-U", "postgres", "-d", database, "-c", sql)  # fmt: skip
        return done.stdout.strip()

    def destroy(self) -> None:
        """Stop the server at once and delete its files."""
        if self.data.exists() and self.running():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def point_default_at(url: str):
    """Point Django's default connection at the PostgreSQL database ``url`` until the block ends.

    Only the connection's address and database change, in place, so everything that reads
    ``connections["default"]`` (the ORM, ``atp.daemon.db.database_url`` and so the daemons
    started with it) follows. The default database must be PostgreSQL too.
    """
    import dj_database_url

    connection = connections["default"]
    saved = dict(connection.settings_dict)
    # A plain dict: the parsed config's TypedDict type differs between library versions.
    target: dict[str, Any] = dict(dj_database_url.parse(url))
    connection.close()
    connection.settings_dict.update(
        {key: target[key] for key in ("NAME", "USER", "PASSWORD", "HOST", "PORT")}
    )
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)
