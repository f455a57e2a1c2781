"""A private PgBouncer in transaction mode, in front of the test database's PostgreSQL.

Large deployments put PgBouncer (``pool_mode = transaction``) between their processes and
PostgreSQL: each transaction of a client may run on another server session. The
``pgbouncer`` fixture starts Debian's ``pgbouncer`` program once per test session, on a
free port, with an ini file and user list of its own in a temporary directory (never the
system service), pooling every database of the server the tests use. Tests skip, saying
why, when the program is not installed (``scripts/ensure-services`` installs it).

The pool is kept small (``POOL_SIZE`` server sessions per database) so that the clients of
a test (the test itself, daemons, their handler processes) really share server sessions:
a session setting or a prepared statement that leaks from one client to another shows.
"""

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from django.db import connections

from atp.bench.cluster import free_port, point_default_at
from atp.daemon.db import database_url

#: Server sessions per database and user: fewer than the clients of a crash test.
POOL_SIZE = 6
#: Where Debian installs the program (``/usr/sbin`` is not on every user's PATH).
PROGRAM_PATHS = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")


def find_program() -> str | None:
    """The ``pgbouncer`` program's path, or None when it is not installed."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    return next((path for path in PROGRAM_PATHS if os.access(path, os.X_OK)), None)


class PgBouncer:
    """One private PgBouncer process in transaction mode: ``start``, ``url``, ``stop``."""

    def __init__(self, program: str, server_host: str, server_port: int, user: str, password=""):
        self.program = program
        self.server = (server_host, server_port)
        self.user, self.password = user, password
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="atp-pgbouncer-"))
        self.logfile = self.root / "pgbouncer.log"
        self.process: subprocess.Popen | None = None
        # PgBouncer refuses to run as root: it drops to the postgres user (-u), which must
        # be able to read its files and write its log.
        self.run_as = "postgres" if os.geteuid() == 0 else None

    def _write_config(self) -> Path:
        host, port = self.server
        # With trust, clients log in without a password; PgBouncer logs in to the server
        # with the user list's.
        (self.root / "userlist.txt").write_text(f'"{self.user}" "{self.password}"\n')
        config = self.root / "pgbouncer.ini"
        config.write_text(
            "[databases]\n"
            # Every database name is passed through to the same server.
            f"* = host={host} port={port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            # The user may read SHOW STATS, SHOW SERVERS… on the "pgbouncer" console.
            f"stats_users = {self.user}\n"
            f"auth_file = {self.root / 'userlist.txt'}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {POOL_SIZE}\n"
            "max_client_conn = 1000\n"
            f"logfile = {self.logfile}\n"
            "log_connections = 0\n"
            "log_disconnections = 0\n"
        )
        if self.run_as:
            user = pwd.getpwnam(self.run_as)
            for path in (self.root, *self.root.iterdir()):
                os.chown(path, user.pw_uid, user.pw_gid)
        return config

    def start(self) -> "PgBouncer":
        """Start the process and wait until it accepts connections."""
        command = [self.program, str(self._write_config())]
        if self.run_as:
            command[1:1] = ["-u", self.run_as]
        with open(self.root / "stderr.txt", "w") as stderr:
            self.process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited at start:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"pgbouncer did not listen on port {self.port}:\n{self.log()}")

    def url(self, database: str) -> str:
        """A ``DATABASE_URL`` for ``database`` through this PgBouncer."""
        return f"postgres://{self.user}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str):
        """A raw driver connection (psycopg 3 or psycopg2, as Django's) to ``database``
        through this PgBouncer, outside Django's connection handling; autocommit."""
        params = connections["default"].get_connection_params()
        params.update(dbname=database, host="127.0.0.1", port=self.port)
        raw = connections["default"].get_new_connection(params)
        raw.autocommit = True
        return raw

    def show(self, what: str) -> list[dict]:
        """The rows of PgBouncer's ``SHOW <what>`` (``STATS``, ``SERVERS``, ``CLIENTS``…)."""
        console = self.connect("pgbouncer")  # Django's cursors send it simple queries
        try:
            with console.cursor() as cursor:
                cursor.execute(f"SHOW {what}")
                names = [column.name for column in cursor.description]
                return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        finally:
            console.close()

    def log(self) -> str:
        """What PgBouncer logged so far (its log file; else what it printed)."""
        for path in (self.logfile, self.root / "stderr.txt"):
            if path.exists() and path.stat().st_size:
                return path.read_text()
        return ""

    def stop(self) -> None:
        """Stop the process (SIGINT: PgBouncer's immediate shutdown) and delete its files."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pgbouncer(django_db_setup):
    """A PgBouncer (transaction mode) in front of the test database's server, for the session."""
    settings = connections["default"].settings_dict
    if connections["default"].vendor != "postgresql":
        pytest.skip("needs PostgreSQL: run with DATABASE_URL=postgres://...")
    program = find_program()
    if program is None:
        pytest.skip(
            "pgbouncer is not installed (apt-get install pgbouncer; scripts/ensure-services)"
        )
    bouncer = PgBouncer(
        program,
        settings["HOST"] or "127.0.0.1",
        int(settings["PORT"] or 5432),
        settings["USER"] or "postgres",
        settings["PASSWORD"] or "",
    ).start()
    yield bouncer
    bouncer.stop()


@pytest.fixture
def through_pgbouncer(pgbouncer, transactional_db):
    """Run the test's own queries through PgBouncer; yield ``(pgbouncer, direct URL)``.

    The default connection is pointed at the test database through the pooler, so daemons
    started with ``database_url()`` connect through it too; the direct URL (the same
    database without the pooler) is for what needs a session (LISTEN). Depends on
    ``transactional_db`` so that pytest-django flushes the database directly, afterwards.
    """
    direct = database_url()
    with point_default_at(pgbouncer.url(connections["default"].settings_dict["NAME"])):
        yield pgbouncer, direct
