"""Remote control: each daemon answers Celery's broadcast commands on the pidbox mailbox.

A daemon thread consumes this daemon's queue of Celery's own mailbox (``app.control
.mailbox``, a kombu ``Mailbox``) through a kombu ``Node``, as a Celery worker's pidbox does,
so ``celery inspect``/``celery control`` and Flower reach ATP's daemons. The handlers read
and write the database through the tracker; the daemon itself is touched only to ask for a
warm stop (``shutdown``) or an immediate heartbeat.
"""

import logging
import os
import threading
import time

from celery.platforms import signals as celery_signals
from django.db import DatabaseError, connection
from kombu import Exchange, Queue

from atp import tracker
from atp.daemon.db import drop_all
from atp.exceptions import ATPError, UnknownTaskType
from atp.models import Status, TaskInstance, TaskType
from atp.tracker import pausing

logger = logging.getLogger("atp.remote")

MAX_BACKOFF = 5.0


def ok(message) -> dict:
    """A successful reply, as Celery's workers send it."""
    return {"ok": message}


def nok(message) -> dict:
    """An error reply, as Celery's workers send it."""
    return {"error": message}


def _request_info(task: TaskInstance, hostname: str) -> dict:
    """A task as Celery's ``Request.info()`` describes it (``inspect active``/``reserved``)."""
    from atp import events

    args, kwargs = events.call_signature(task.input)
    return {
        "id": str(task.uuid),
        "name": task.type.identifier,
        "args": args,
        "kwargs": kwargs,
        "type": task.type.identifier,
        "hostname": hostname,
        "time_start": task.started_at.timestamp() if task.started_at else None,
        "acknowledged": True,
        "delivery_info": {"exchange": "", "routing_key": task.queue, "priority": task.priority},
        "worker_pid": None,
        "status": task.status_name,
    }


# --- handlers: ``handler(state, **arguments)`` as kombu's Node calls them -----------------


def ping(state, **kwargs):
    """Answer ``pong``."""
    return ok("pong")


def active(state, safe=False, **kwargs):
    """Tasks whose handler runs (or is paused) on this daemon."""
    tasks = state.owned().filter(status__in=(Status.RUNNING, Status.PAUSED))
    return [_request_info(task, state.hostname) for task in tasks]


def reserved(state, **kwargs):
    """Tasks this daemon claimed and has not started yet."""
    tasks = state.owned().filter(status=Status.SCHEDULED)
    return [_request_info(task, state.hostname) for task in tasks]


def scheduled(state, **kwargs):
    """Always empty: ATP daemons hold no tasks with an ETA; those wait in the database."""
    return []


def revoked(state, **kwargs):
    """Always empty: revocations live in the database, not in the daemons' memory."""
    return []


def registered(state, taskinfoitems=None, **kwargs):
    """The task types registered in the database."""
    return list(TaskType.objects.order_by("identifier").values_list("identifier", flat=True))


def stats(state, **kwargs):
    """Numbers of this daemon, shaped like a Celery worker's ``stats`` reply."""
    counts = state.daemon_stats()
    return {
        "pid": os.getpid(),
        "clock": str(state.app.clock.value),
        "uptime": int(time.monotonic() - state.started),
        "server_id": state.server_id,
        "pool": {
            "implementation": f"atp.pool:{counts['pool']}",
            "max-concurrency": counts["concurrency"],
            "processes": [],
        },
        "total": counts["total"],
        "prefetch_count": counts["concurrency"],
        "broker": {"transport": state.app.conf.broker_url.split(":", 1)[0]},
        "rusage": {},
    }


def active_queues(state, **kwargs):
    """The queues this daemon serves, described by kombu itself as a Celery worker's are.

    Flower's worker page reads the description's keys (``exclusive``, ``durable``,
    ``auto_delete``, ``no_ack``, ``alias``, …): kombu's ``Queue.as_dict`` has them all.
    A paused queue (``control.pause_queue``) is left out, as Celery leaves out a queue
    whose consumer was cancelled: no daemon takes its tasks until it is resumed.
    """
    paused = set(pausing.paused_queues())
    return [
        Queue(name, Exchange(name, type="direct"), routing_key=name).as_dict(recurse=True)
        for name in state.queues()
        if name not in paused
    ]


def conf(state, **kwargs):
    """No Celery configuration to show: ATP's settings live in Django's."""
    return {}


def clock(state, **kwargs):
    """This daemon's Lamport clock."""
    return {"clock": state.app.clock.value}


def heartbeat(state, **kwargs):
    """Send a ``worker-heartbeat`` now (event receivers ask this when they connect)."""
    state.beat_now()


def revoke(state, task_id, terminate=False, signal=None, **kwargs):
    """Revoke tasks by uuid as ``control.revoke`` does (``tracker.cancel_task``): a task that
    has not ended is REVOKED now; with ``terminate`` a running one's handler is killed with
    ``signal`` (default SIGTERM) by the daemon that runs it.

    Every daemon receives the broadcast; the first to lock the task decides, the others
    find it ended (or its termination already requested).
    """
    uuids = [task_id] if isinstance(task_id, str) else list(task_id or [])
    signum = celery_signals.signum(signal or "SIGTERM") if terminate else None
    done = []
    for task in TaskInstance.objects.filter(uuid__in=uuids).select_related("type"):
        try:
            stopped = tracker.cancel_task(
                task.pk,
                f"by remote control on {state.hostname}",
                terminate=terminate,
                signum=signum,
            )
            if stopped in (tracker.Stopped.REVOKED, tracker.Stopped.KILL_REQUESTED):
                done.append(str(task.uuid))
        except ATPError as exc:  # another daemon got there first, or the task ended
            logger.debug("revoke %s: %s", task.uuid, exc)
    return ok(f"tasks {set(done) or set(uuids)} flagged as revoked")


def terminate(state, signal, task_id, **kwargs):
    """``celery control terminate <signal> <id>``: revoke with ``terminate``."""
    return revoke(state, task_id, terminate=True, signal=signal)


def rate_limit(state, task_name, rate_limit, **kwargs):
    """Store a task type's rate limit ("10/m"; 0 or None disables it)."""
    value = "" if rate_limit in (None, 0, "0", "") else str(rate_limit)
    try:
        tracker.update_task_type(task_name, rate_limit=value)
    except UnknownTaskType:
        return nok("unknown task")
    except ATPError as exc:
        return nok(str(exc))
    return ok("new rate limit set successfully" if value else "rate limit disabled successfully")


def time_limit(state, task_name=None, hard=None, soft=None, **kwargs):
    """Store a task type's hard and soft time limits (seconds)."""
    try:
        tracker.update_task_type(task_name, hard_time_limit=hard, soft_time_limit=soft)
    except UnknownTaskType:
        return nok("unknown task")
    except ATPError as exc:
        return nok(str(exc))
    return ok("time limits set successfully")


def shutdown(state, msg="Got shutdown from remote", **kwargs):
    """Stop this daemon warmly: it finishes its running handlers and exits."""
    logger.warning("%s: %s", state.hostname, msg)
    state.request_stop()
    return ok("shutting down")


HANDLERS = {
    handler.__name__: handler
    for handler in (
        ping,
        active,
        reserved,
        scheduled,
        revoked,
        registered,
        stats,
        active_queues,
        conf,
        clock,
        heartbeat,
        revoke,
        terminate,
        rate_limit,
        time_limit,
        shutdown,
    )
}


class NodeState:
    """What the handlers may know of and ask of their daemon (the Node's ``state``)."""

    def __init__(self, app, hostname, server_id, daemon=None):
        self.app, self.hostname, self.server_id, self.daemon = app, hostname, server_id, daemon
        self.started = time.monotonic()
        self.beat_now = lambda: None

    def owned(self):
        """This daemon's tasks, with their types."""
        return TaskInstance.objects.claimed_by(self.server_id).select_related("type")

    def queues(self) -> list[str]:
        """Queues served: the daemon's ``--queues``, or every task type's queue."""
        wanted = self.daemon.options.queues if self.daemon else None
        return wanted or sorted(set(TaskType.objects.values_list("queue", flat=True)))

    def daemon_stats(self) -> dict:
        """Counters of the daemon (read without locking: a report, not a decision)."""
        daemon = self.daemon
        if daemon is None:
            return {"pool": "none", "concurrency": 0, "total": {}}
        return {
            "pool": daemon.options.pool,
            "concurrency": daemon.options.concurrency,
            "total": {"processed": daemon.processed},
        }

    def request_stop(self) -> None:
        """Ask the daemon for a warm stop."""
        if self.daemon is not None:
            self.daemon.request_stop()


class RemoteControl(threading.Thread):
    """Serves this daemon's pidbox queue on its own broker connection until ``stop()``."""

    def __init__(self, app, hostname: str, state: NodeState):
        super().__init__(name="atp-remote", daemon=True)
        self.app, self.hostname = app, hostname
        self.node = app.control.mailbox.Node(hostname, state=state, handlers=dict(HANDLERS))
        self._stopping = threading.Event()
        self.ready = threading.Event()

    def stop(self, timeout: float = 5.0) -> None:
        """End the thread (its pidbox queue is left to expire)."""
        self._stopping.set()
        self.join(timeout)

    def run(self) -> None:
        """The control thread: answer broadcast commands until stopped; reconnect with backoff."""
        backoff = 0.0
        try:
            while not self._stopping.is_set():
                try:
                    self._serve()
                    backoff = 0.0
                except DatabaseError as exc:
                    logger.error("Remote control of %s: database error: %s", self.hostname, exc)
                    drop_all()
                    backoff = min(MAX_BACKOFF, max(0.25, backoff * 2))
                except Exception as exc:  # the broker went away: reconnect with backoff
                    if not backoff:
                        logger.error("Remote control of %s: broker error: %s", self.hostname, exc)
                    backoff = min(MAX_BACKOFF, max(0.25, backoff * 2))
                self._stopping.wait(backoff)
        finally:
            connection.close()

    def _serve(self) -> None:
        with self.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1)
            self.node.channel = conn.channel()
            consumer = self.node.listen(callback=self._on_message)
            self.ready.set()
            try:
                while not self._stopping.is_set():
                    try:
                        conn.drain_events(timeout=0.5)
                    except TimeoutError:
                        conn.heartbeat_check()
            finally:
                self.ready.clear()
                try:
                    consumer.cancel()
                except Exception:  # noqa: S110 (the connection may already be gone)
                    pass

    def _on_message(self, body, message) -> None:
        self.app.clock.forward()
        try:
            self.node.handle_message(body, message)
        except Exception as exc:
            logger.error("Remote control command failed: %r", exc, exc_info=True)
