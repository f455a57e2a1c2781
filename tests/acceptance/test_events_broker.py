"""Celery's own tools against real daemons: EventReceiver, the celery CLI and Flower.

Needs the local Redis and RabbitMQ (scripts/ensure-services starts them). Each test gets
its own Redis database or RabbitMQ vhost, so parallel runs do not hear each other.
"""

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

import pytest
from celery import Celery

from atp import tracker
from atp.models import EventCursor, LogRecord, Status, TaskInstance, TaskType, Worker
from tests.support.atpd_process import REPO, wait_until

pytestmark = pytest.mark.django_db(transaction=True)
CELERY = [sys.executable, "-m", "celery"]


def _rabbit_vhost():
    vhost = f"atp-test-{uuid.uuid4().hex[:8]}"
    rabbitmqctl = shutil.which("rabbitmqctl") or "rabbitmqctl"
    subprocess.run([rabbitmqctl, "add_vhost", vhost], check=True, capture_output=True)
    subprocess.run(
        [rabbitmqctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )
    return vhost, lambda: subprocess.run(
        [rabbitmqctl, "delete_vhost", vhost], capture_output=True, check=False
    )


@pytest.fixture(params=["redis", "amqp"])
def broker_url(request):
    """An isolated broker URL: a random Redis database, or a fresh RabbitMQ vhost."""
    if request.param == "redis":
        yield f"redis://127.0.0.1:6379/{random.randint(1, 15)}"
    else:
        vhost, drop = _rabbit_vhost()
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
        drop()


@pytest.fixture
def redis_url():
    """The Redis broker only (for the tests that need one broker, not both)."""
    return f"redis://127.0.0.1:6379/{random.randint(1, 15)}"


class Collector:
    """A Celery EventReceiver in a thread, recording every event it gets."""

    def __init__(self, url):
        self.app = Celery(broker=url, set_as_current=False)
        self.events: list[dict] = []
        self.receiver = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        with self.app.events.default_dispatcher(hostname="probe@test") as probe:
            wait_until(
                lambda: probe.send("probe-ready") or self.of_type("probe-ready"),
                timeout=20,
                interval=0.2,
                what="the receiver to listen",
            )

    def _run(self):
        with self.app.connection_for_read() as conn:
            self.receiver = self.app.events.Receiver(conn, handlers={"*": self.events.append})
            self.receiver.capture(limit=None, timeout=None, wakeup=False)

    def of_type(self, prefix):
        return [event for event in self.events if event["type"].startswith(prefix)]

    def stop(self):
        if self.receiver is not None:
            self.receiver.should_stop = True
        self.thread.join(5)


def relayed_everything():
    newest = LogRecord.objects.order_by("-pk").values_list("pk", flat=True).first()
    return EventCursor.objects.filter(position__gte=newest).exists()


@pytest.mark.slow  # run by make test-postgres only (see Makefile)
def test_receiver_gets_every_event_once_in_clock_order_across_relay_restart(broker_url, daemons):
    tracker.register_task_type("ev.noop", "tests.support.handlers.noop")
    tracker.register_task_type("ev.fail", "tests.support.handlers.fail")
    collector = Collector(broker_url)
    try:
        settings = {"EVENTS_BROKER_URL": broker_url}
        first = daemons.start("-n", "2", settings=settings)
        for n in range(5):
            tracker.enqueue_task("ev.noop", f"a{n}")
        tracker.enqueue_task("ev.fail", "a-fail")
        wait_until(lambda: TaskInstance.objects.terminal().count() == 6, what="first batch")
        wait_until(relayed_everything, what="first relay")
        first.send_signal(signal.SIGTERM)
        first.wait(20)
        # While no daemon (so no relay) runs, more events are stored...
        for n in range(5):
            tracker.enqueue_task("ev.noop", f"b{n}")
        revoked = tracker.enqueue_task("ev.noop", "b-revoked")
        tracker.revoke_task(revoked)
        # ...and a new daemon publishes them, then its own.
        daemons.start("-n", "2", settings=settings)
        wait_until(lambda: TaskInstance.objects.terminal().count() == 12, what="second batch")
        wait_until(relayed_everything, what="second relay")
        stored = [
            (record.fields["uuid"], record.event, record.pk)
            for record in LogRecord.objects.order_by("pk")
        ]
        wait_until(
            lambda: len(collector.of_type("task-")) >= len(stored), timeout=20, what="receipt"
        )
        time.sleep(0.5)  # a duplicate would arrive right behind
        received = collector.of_type("task-")
        assert [(e["uuid"], e["type"]) for e in received] == [(u, t) for u, t, _ in stored]
        # Clocks rise in receipt order (task-sent clocks are the receiver's, as in Celery).
        clocks = [e["clock"] for e in received if e["type"] != "task-sent"]
        assert clocks == sorted(clocks) and len(set(clocks)) == len(clocks)
        assert {e["hostname"] for e in collector.of_type("worker-online")} == {
            f"atpd-{server_id}@{socket.gethostname()}"
            for server_id in Worker.objects.values_list("server_id", flat=True)
        }
        assert collector.of_type("worker-heartbeat")
        assert collector.of_type("worker-offline")  # the first daemon said goodbye
    finally:
        collector.stop()


def _celery(url, *args, timeout=30):
    return subprocess.run(
        [*CELERY, "-b", url, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )


def _node(server_id):
    return f"atpd-{server_id}@{socket.gethostname()}"


@pytest.mark.slow  # run by make test-postgres only (see Makefile)
def test_celery_cli_pings_every_daemon_and_revokes_a_running_task(daemons, redis_url):
    tracker.register_task_type("ev.sleep", "tests.support.handlers.sleep")
    settings = {"EVENTS_BROKER_URL": redis_url}
    daemons.start("-n", "1", settings=settings)
    daemons.start("-n", "1", settings=settings)
    wait_until(lambda: Worker.objects.running().count() == 2, what="two daemons")
    nodes = {_node(sid) for sid in Worker.objects.values_list("server_id", flat=True)}

    def pinged():
        result = _celery(redis_url, "inspect", "ping", "--json", "--timeout", "2")
        return result.returncode == 0 and nodes <= set(json.loads(result.stdout))

    wait_until(pinged, timeout=30, interval=0.5, what="celery inspect ping to list both")

    task_id = tracker.enqueue_task("ev.sleep", "long", {"seconds": 60})
    task = TaskInstance.objects.get(pk=task_id)
    wait_until(lambda: TaskInstance.objects.get(pk=task_id).status == Status.RUNNING)
    active = _celery(redis_url, "inspect", "active", "--json", "--timeout", "2")
    assert str(task.uuid) in active.stdout
    # Celery 5's CLI spells "revoke --terminate" as "terminate <signal> <id>".
    result = _celery(redis_url, "control", "terminate", "SIGTERM", str(task.uuid))
    assert result.returncode == 0, result.stderr
    wait_until(lambda: TaskInstance.objects.get(pk=task_id).status == Status.REVOKED, timeout=20)
    revoked = LogRecord.objects.get(instance_id=task_id, event="task-revoked").fields
    assert revoked["terminated"] is True and revoked["signum"] == signal.SIGTERM

    # A waiting task: plain revoke, it never runs.
    waiting = TaskInstance.objects.get(
        pk=tracker.enqueue_task("ev.sleep", "later", {"seconds": 1}, countdown=3600)
    )
    assert _celery(redis_url, "control", "revoke", str(waiting.uuid)).returncode == 0
    wait_until(lambda: TaskInstance.objects.get(pk=waiting.pk).status == Status.REVOKED)
    assert LogRecord.objects.filter(instance=waiting, event="task-revoked").count() == 1

    # Limits are stored on the task type.
    assert _celery(redis_url, "control", "rate_limit", "ev.sleep", "10/m").returncode == 0
    assert _celery(redis_url, "control", "time_limit", "ev.sleep", "30", "60").returncode == 0
    task_type = TaskType.objects.get(identifier="ev.sleep")
    assert (task_type.rate_limit, task_type.soft_time_limit, task_type.hard_time_limit) == (
        "10/m",
        30,
        60,
    )
    registered = _celery(redis_url, "inspect", "registered", "--json", "--timeout", "2")
    assert "ev.sleep" in registered.stdout

    # shutdown: a warm stop of every daemon.
    assert _celery(redis_url, "control", "shutdown").returncode == 0
    wait_until(lambda: Worker.objects.running().count() == 0, timeout=30, what="shutdown")


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _http(method, url):
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)  # noqa: S310 (local Flower, http only)
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.loads(response.read() or b"null")


def test_flower_lists_tasks_and_workers_and_revokes(daemons, redis_url, tmp_path):
    port = _free_port()
    env = dict(os.environ, FLOWER_UNAUTHENTICATED_API="true")
    log = open(tmp_path / "flower.log", "w")  # noqa: SIM115
    flower = subprocess.Popen(
        [*CELERY, "-b", redis_url, "flower", f"--port={port}", "--address=127.0.0.1"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def up():
            try:
                return _http("GET", f"{base}/api/tasks") is not None
            except OSError:
                return False

        wait_until(up, timeout=30, interval=0.3, what="Flower to start")
        tracker.register_task_type("fl.noop", "tests.support.handlers.noop")
        tracker.register_task_type("fl.fail", "tests.support.handlers.fail")
        tracker.register_task_type("fl.sleep", "tests.support.handlers.sleep")
        daemons.start("-n", "2", settings={"EVENTS_BROKER_URL": redis_url})
        ok = TaskInstance.objects.get(pk=tracker.enqueue_task("fl.noop", "ok"))
        bad = TaskInstance.objects.get(pk=tracker.enqueue_task("fl.fail", "bad"))
        wait_until(lambda: TaskInstance.objects.terminal().count() == 2)

        def flower_states():
            tasks = _http("GET", f"{base}/api/tasks")
            return {uid: info["state"] for uid, info in tasks.items()}

        expected = {str(ok.uuid): "SUCCESS", str(bad.uuid): "FAILURE"}
        wait_until(lambda: flower_states() == expected, timeout=20, what="Flower's task list")
        tasks = _http("GET", f"{base}/api/tasks")
        assert tasks[str(ok.uuid)]["name"] == "fl.noop"
        node = _node(Worker.objects.get().server_id)
        assert tasks[str(ok.uuid)]["worker"] == node

        wait_until(
            lambda: node in _http("GET", f"{base}/api/workers?refresh=1"),
            timeout=20,
            interval=0.5,
            what="Flower's worker list",
        )
        # The worker page renders every key of each queue's kombu description (issue 13).
        page = f"{base}/worker/{node}"
        with urllib.request.urlopen(page, timeout=30) as response:  # noqa: S310 (local Flower)
            assert response.status == 200
            html = response.read().decode()
        assert "<td>default</td>" in html  # the queue of the fl.* types
        long = TaskInstance.objects.get(
            pk=tracker.enqueue_task("fl.sleep", "long", {"seconds": 60})
        )
        wait_until(lambda: TaskInstance.objects.get(pk=long.pk).status == Status.RUNNING)
        _http("POST", f"{base}/api/task/revoke/{long.uuid}?terminate=true")
        wait_until(lambda: TaskInstance.objects.get(pk=long.pk).status == Status.REVOKED)
        wait_until(
            lambda: flower_states().get(str(long.uuid)) == "REVOKED",
            timeout=20,
            what="Flower to show the revoke",
        )
    finally:
        os.killpg(flower.pid, signal.SIGTERM)
        flower.wait(10)
        log.close()
