"""A private PostgreSQL cluster for tests that stop, restart or freeze the database server.

The shared cluster on port 5432 serves every test run on this machine (other suites, CI), so
a test must never restart it. ``PgCluster`` runs ``initdb`` and ``pg_ctl`` from the newest
``/usr/lib/postgresql/<version>/bin`` into a temporary directory, on a free port of its own.
PostgreSQL refuses to run as root: as root the commands run as the ``postgres`` OS user,
in a directory that user owns.

The ``private_postgres`` fixture points Django's default connection (and so every daemon
the test starts through ``database_url()``) at a fresh, migrated database on that cluster
for one test, and back afterwards.
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

import pytest
from django.core.management import call_command
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
#: The migrated database each test's database is copied from.
TEMPLATE = "atp_template"
_databases = 0  # databases made so far in this session (their names must differ)


def pg_bin() -> Path:
    """The ``bin`` directory of the newest installed PostgreSQL."""
    versions = sorted(
        (path for path in PG_ROOT.glob("*/bin") if (path / "initdb").exists()),
        key=lambda path: [int(part) for part in re.findall(r"\d+", path.parent.name)],
    )
    if not versions:
        pytest.skip(f"no PostgreSQL server programs under {PG_ROOT}")
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
def default_database_at(url: str):
    """Point Django's default connection at ``url`` (PostgreSQL) until the block ends.

    Only the connection's address and database change, in place, so everything that reads
    ``connections["default"]`` (the ORM, ``atp.daemon.db.database_url`` and so the daemons
    a test starts) follows. Both databases must be PostgreSQL.
    """
    import dj_database_url

    connection = connections["default"]
    if connection.vendor != "postgresql":
        pytest.skip("the private cluster replaces a PostgreSQL test database")
    saved = dict(connection.settings_dict)
    target = dj_database_url.parse(url)
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


@pytest.fixture(scope="session")
def pg_cluster(django_db_setup, django_db_blocker):
    """A private PostgreSQL cluster for this test session, with a migrated template database.

    Started once; a test that stops it need not start it again (``private_postgres`` does).
    """
    if connections["default"].vendor != "postgresql":
        pytest.skip("needs PostgreSQL: run with DATABASE_URL=postgres://...")
    cluster = PgCluster().init()
    cluster.start()
    cluster.psql(f"CREATE DATABASE {TEMPLATE}")
    with django_db_blocker.unblock(), default_database_at(cluster.url(TEMPLATE)):
        call_command("migrate", verbosity=0, interactive=False)
    yield cluster
    cluster.destroy()


@pytest.fixture
def private_postgres(pg_cluster, transactional_db):
    """Run the test on a fresh database of the private cluster; yield the ``PgCluster``.

    Depends on ``transactional_db`` so that it is set up after (and torn down before) the
    test database's own fixture: pytest-django then flushes its own database, untouched.
    """
    global _databases
    _databases += 1
    name = f"atp_private_{_databases}"
    if not pg_cluster.running():
        pg_cluster.start()
    pg_cluster.psql(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    with default_database_at(pg_cluster.url(name)):
        yield pg_cluster
    if not pg_cluster.running():
        pg_cluster.start()
    pg_cluster.psql(f"DROP DATABASE {name} WITH (FORCE)")
