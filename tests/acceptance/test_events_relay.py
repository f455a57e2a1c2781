"""The relay's delivery claims against a private Redis: outages and several daemons.

Each Redis test runs its own ``redis-server`` subprocess on a free port, so it can kill and
restart the broker without touching the machine-wide Redis other processes use. RabbitMQ is
too heavy to run privately per test: there the outage is confined to a fresh vhost and a
user of the test's own on the shared broker (its permissions revoked, its connections shut).

Redis delivers Celery events by pub/sub: an event published while no receiver listens is
gone, which is Redis's behaviour, not the relay's. So after an outage the test brings the
broker back *locked* (``requirepass``), starts its receiver with the password, and only then
unlocks it for the daemon, whose relay then publishes what was stored meanwhile.
"""

import re
import shutil
import signal
import socket
import subprocess
import uuid

import pytest
import redis

from atp import tracker
from atp.daemon.relay import CURSOR_NAME
from atp.models import EventCursor, LogRecord, TaskInstance
from tests.acceptance.test_events_broker import Collector, relayed_everything
from tests.support.atpd_process import wait_until

pytestmark = pytest.mark.django_db(transaction=True)
needs_redis_server = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="needs redis-server"
)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateRedis:
    """A ``redis-server`` subprocess owned by one test, on a port of its own."""

    def __init__(self, directory):
        self.directory = directory
        self.port = _free_port()
        self.proc = None
        self.starts = 0

    def url(self, password=None):
        auth = f":{password}@" if password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self, password=None):
        return redis.Redis(host="127.0.0.1", port=self.port, password=password)

    def start(self, password=None):
        """Start (or restart) the server; with ``password``, only its holders get in."""
        args = [shutil.which("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        args += ["--dir", str(self.directory)]
        if password:
            args += ["--requirepass", password]
        self.starts += 1
        log = open(self.directory / f"redis-{self.starts}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()

        def answers():
            try:
                return self.client(password).ping()
            except redis.RedisError:
                return False

        wait_until(answers, timeout=20, what="the private redis-server to start")

    def kill(self):
        """The outage: the broker dies at once, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def private_redis(tmp_path):
    """A running private Redis, killed after the test."""
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.kill()


def _cursor_position():
    cursor = EventCursor.objects.filter(name=CURSOR_NAME).first()
    return cursor.position if cursor else 0


def _stored(after=0):
    """The stored task events after record id ``after``, as a receiver should see them."""
    return [
        _identity(record.fields["uuid"], record.event, record.pk)
        for record in LogRecord.objects.filter(pk__gt=after).order_by("pk")
        if record.event
    ]


def _identity(uuid, type_, clock):
    # task-sent clocks are the receiver's own (Celery's rule), the others are record ids.
    return (uuid, type_, None if type_ == "task-sent" else clock)


def _received(collector):
    return [_identity(e["uuid"], e["type"], e["clock"]) for e in collector.of_type("task-")]


@pytest.mark.slow  # run by make test-postgres only (see Makefile)
@needs_redis_server
def test_broker_outage_loses_no_event_and_relay_resumes_where_it_stopped(private_redis, daemons):
    tracker.register_task_type("rl.noop", "tests.support.handlers.noop")
    tracker.register_task_type("rl.fail", "tests.support.handlers.fail")
    before = Collector(private_redis.url())
    try:
        daemon = daemons.start("-n", "2", settings={"EVENTS_BROKER_URL": private_redis.url()})
        for n in range(5):
            tracker.enqueue_task("rl.noop", f"a{n}")
        tracker.enqueue_task("rl.fail", "a-fail")
        wait_until(lambda: TaskInstance.objects.terminal().count() == 6, what="first batch")
        wait_until(relayed_everything, what="first relay")
        stored_before = _stored()
        wait_until(
            lambda: len(before.of_type("task-")) >= len(stored_before), timeout=20, what="receipt"
        )
    finally:
        before.stop()
    assert _received(before) == stored_before
    position = _cursor_position()

    # The outage: tasks keep running and their events are stored, none published.
    private_redis.kill()
    for n in range(5):
        tracker.enqueue_task("rl.noop", f"b{n}")
    tracker.enqueue_task("rl.fail", "b-fail")
    revoked = tracker.enqueue_task("rl.noop", "b-revoked", countdown=3600)
    tracker.revoke_task(revoked)
    wait_until(lambda: TaskInstance.objects.terminal().count() == 13, what="batch in outage")
    assert daemon.poll() is None  # the daemon lives on without its broker
    stored_during = _stored(after=position)
    assert len(stored_during) >= 7 * 3  # sent, received/started..., ended: all stored
    assert _cursor_position() == position  # the relay did not move past unpublished events

    # The broker returns, locked until the receiver listens; then the relay may publish.
    private_redis.start(password="let-me-in")  # noqa: S106 (a throwaway test password)
    after = Collector(private_redis.url(password="let-me-in"))
    try:
        assert _cursor_position() == position
        private_redis.client("let-me-in").config_set("requirepass", "")
        wait_until(relayed_everything, timeout=30, what="the relay to resume")
        stored_after = _stored(after=position)
        wait_until(
            lambda: len(after.of_type("task-")) >= len(stored_after),
            timeout=20,
            what="receipt after the outage",
        )
        # A duplicate would arrive right behind the last event.
        with pytest.raises(AssertionError):
            wait_until(
                lambda: len(after.of_type("task-")) > len(stored_after),
                timeout=0.5,
                what="a duplicate",
            )
    finally:
        after.stop()
    # Every stored event once, in id order, across the outage: nothing lost, nothing repeated.
    assert _received(after) == stored_after
    assert _received(before) + _received(after) == _stored()
    assert "resumed" in daemons.output(daemon)


_RELAYED = re.compile(r"Relayed events (\d+)-(\d+)")


def _relayed_ranges(daemons, proc):
    return [(int(a), int(b)) for a, b in _RELAYED.findall(daemons.output(proc))]


@needs_redis_server
@pytest.mark.postgres
def test_several_daemons_publish_each_event_once(private_redis, daemons):
    """Relaying has no owner: any daemon's relay may take the cursor at each round, one at a
    time (SKIP LOCKED). So the test checks the relayed id ranges of all daemons tile the
    stored ids without overlap, and that when the daemon that relayed last stops, another
    takes the relay over."""
    tracker.register_task_type("rl.noop", "tests.support.handlers.noop")
    tracker.register_task_type("rl.sleep", "tests.support.handlers.sleep")
    collector = Collector(private_redis.url())
    try:
        settings = {"EVENTS_BROKER_URL": private_redis.url()}
        procs = [daemons.start("-n", "4", "-v", "2", settings=settings) for _ in range(3)]
        for n in range(40):
            tracker.enqueue_task("rl.noop", f"a{n}")
        for n in range(6):
            tracker.enqueue_task("rl.sleep", f"s{n}", {"seconds": 0.2})
        wait_until(lambda: TaskInstance.objects.terminal().count() == 46, what="first batch")
        wait_until(relayed_everything, what="first relay")
        ranges = {proc.pid: _relayed_ranges(daemons, proc) for proc in procs}

        # The daemon that relayed the newest events stops; the others must carry on.
        newest = max((last, pid) for pid, spans in ranges.items() for _, last in spans)[1]
        stopped = next(proc for proc in procs if proc.pid == newest)
        stopped.send_signal(signal.SIGTERM)
        assert stopped.wait(20) == 0
        handover = _cursor_position()
        for n in range(30):
            tracker.enqueue_task("rl.noop", f"b{n}")
        wait_until(lambda: TaskInstance.objects.terminal().count() == 76, what="second batch")
        wait_until(relayed_everything, what="second relay")
        stored = _stored()
        wait_until(
            lambda: len(collector.of_type("task-")) >= len(stored), timeout=20, what="receipt"
        )
        with pytest.raises(AssertionError):
            wait_until(
                lambda: len(collector.of_type("task-")) > len(stored),
                timeout=0.5,
                what="a duplicate",
            )
    finally:
        collector.stop()

    # Each stored event arrived once, none missing, in id order.
    assert _received(collector) == stored
    # The relayed ranges of all daemons tile the stored ids: no id relayed twice, no gap.
    spans = sorted(span for proc in procs for span in _relayed_ranges(daemons, proc))
    first_id = LogRecord.objects.order_by("pk").values_list("pk", flat=True).first()
    assert spans[0][0] == first_id and spans[-1][1] == _cursor_position()
    assert all(prev[1] + 1 == nxt[0] for prev, nxt in zip(spans, spans[1:], strict=False))
    # After the handover only the daemons still running relayed.
    later = {
        proc.pid
        for proc in procs
        for first, _ in _relayed_ranges(daemons, proc)
        if first > handover
    }
    assert later and stopped.pid not in later


def _rabbitmqctl(*args, check=True):
    return subprocess.run(
        [shutil.which("rabbitmqctl") or "rabbitmqctl", *args], capture_output=True, check=check
    )


@pytest.fixture
def rabbit_relay_user():
    """A fresh vhost with the relay's own user; yields (vhost, user, password)."""
    suffix = uuid.uuid4().hex[:8]
    vhost, user, password = f"atp-test-{suffix}", f"atp-relay-{suffix}", uuid.uuid4().hex
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("add_user", user, password)
    for who in ("guest", user):
        _rabbitmqctl("set_permissions", "-p", vhost, who, ".*", ".*", ".*")
    yield vhost, user, password
    _rabbitmqctl("delete_user", user, check=False)
    _rabbitmqctl("delete_vhost", vhost, check=False)


@pytest.mark.slow  # run by make test-postgres only (see Makefile)
@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs RabbitMQ")
def test_rabbitmq_outage_loses_no_event_and_one_receiver_gets_each_once(rabbit_relay_user, daemons):
    vhost, user, password = rabbit_relay_user
    tracker.register_task_type("rl.noop", "tests.support.handlers.noop")
    # The receiver (guest) stays connected all along: its queue hears every event published.
    collector = Collector(f"amqp://guest:guest@127.0.0.1:5672/{vhost}")
    try:
        relay_url = f"amqp://{user}:{password}@127.0.0.1:5672/{vhost}"
        daemon = daemons.start("-n", "2", settings={"EVENTS_BROKER_URL": relay_url})
        for n in range(4):
            tracker.enqueue_task("rl.noop", f"a{n}")
        wait_until(lambda: TaskInstance.objects.terminal().count() == 4, what="first batch")
        wait_until(relayed_everything, what="first relay")
        position = _cursor_position()

        # The outage, as the daemon sees it: the broker shuts its connections and refuses it.
        _rabbitmqctl("clear_permissions", "-p", vhost, user)
        _rabbitmqctl("close_all_user_connections", user, "test outage")
        for n in range(4):
            tracker.enqueue_task("rl.noop", f"b{n}")
        wait_until(lambda: TaskInstance.objects.terminal().count() == 8, what="batch in outage")
        assert _stored(after=position)
        assert _cursor_position() == position

        _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        wait_until(relayed_everything, timeout=30, what="the relay to resume")
        stored = _stored()
        wait_until(
            lambda: len(collector.of_type("task-")) >= len(stored), timeout=20, what="receipt"
        )
        with pytest.raises(AssertionError):
            wait_until(
                lambda: len(collector.of_type("task-")) > len(stored),
                timeout=0.5,
                what="a duplicate",
            )
    finally:
        collector.stop()
    assert _received(collector) == stored
    assert "resumed" in daemons.output(daemon)


@needs_redis_server
def test_an_error_in_the_relay_step_is_contained(private_redis, daemons):
    """14.2: the relay's step fails with an error three times; it logs it with the traceback,
    backs off and resumes, and the daemon runs its tasks meanwhile."""
    tracker.register_task_type("rl.noop", "tests.support.handlers.noop")
    daemon = daemons.start(
        "-n", "2", settings={"EVENTS_BROKER_URL": private_redis.url()}, faults={"relay": 3}
    )
    for n in range(5):
        tracker.enqueue_task("rl.noop", f"r{n}")
    wait_until(lambda: TaskInstance.objects.terminal().count() == 5, what="the tasks to run")
    wait_until(relayed_everything, what="the relay to resume and publish every event")
    output = daemons.output(daemon)
    assert "PlantedFault" in output and "Traceback" in output
    assert "Event relay of" in output and "resumed" in output
    assert daemon.poll() is None
