"""The Worker rows: each atpd registers itself, heartbeats, and says when it stops.

A row belongs to one process at a time, named by its ``instance`` token (random per
start). Every write here is conditioned on that token, so a second process started with
the same ``--server-id`` can neither be mistaken for this one nor make it act.
"""

import os
import secrets
import socket
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from atp.exceptions import ServerIdInUse
from atp.models import Worker


def new_instance() -> str:
    """A fresh token for one daemon process (``Worker.instance``)."""
    return secrets.token_hex(16)


def register_worker(
    server_id: str, instance: str | None = None, *, worker_timeout: float | None = None
):
    """Record this process as the running daemon ``server_id``; return its Worker row.

    ``instance`` is the process's token (``new_instance``; a fresh one if not given).

    With ``worker_timeout`` (a daemon starting), refuse with ServerIdInUse when another
    process holds the id and is alive: its row is not stopped and heartbeat within
    ``worker_timeout`` seconds. The row is locked while checking, so of two daemons starting
    with one id at the same moment exactly one wins. A stopped or silent row is taken over.
    Without it (this daemon re-registering after it was declared lost) the row is taken.
    """
    now = timezone.now()
    instance = instance or new_instance()
    with transaction.atomic():
        worker = Worker.objects.select_for_update().filter(server_id=server_id).first()
        if (
            worker is not None
            and worker_timeout is not None
            and worker.instance != instance
            and worker.stopped_at is None
            and worker.heartbeat_at >= now - timedelta(seconds=worker_timeout)
        ):
            silence = (now - worker.heartbeat_at).total_seconds()
            raise ServerIdInUse(
                f"server id {server_id!r} is in use by a live daemon (pid {worker.pid} on "
                f"{worker.hostname}, last heartbeat {silence:.1f} s ago); stop it or choose "
                "another --server-id"
            )
        values = {
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": now,
            "heartbeat_at": now,
            "stopped_at": None,
            "instance": instance,
        }
        worker, _ = Worker.objects.update_or_create(server_id=server_id, defaults=values)
    return worker


def beat(server_id: str, instance: str) -> str:
    """Refresh the daemon's heartbeat; say whether the row is still this process's.

    Returns "ok"; "lost" when this process was declared lost (its row is stopped: its tasks
    were re-enqueued and handed to others, its running attempts are stale); or "taken" when
    another process re-registered the id meanwhile (possible only after this one was silent
    for longer than the worker timeout, so its tasks were recovered as well).
    """
    mine = Worker.objects.filter(server_id=server_id, instance=instance)
    if mine.running().update(heartbeat_at=timezone.now()):
        return "ok"
    return "lost" if mine.exists() else "taken"


def stop_worker(server_id: str, instance: str) -> None:
    """Mark the daemon as stopped (a clean exit), if the row is still this process's."""
    Worker.objects.filter(server_id=server_id, instance=instance).update(stopped_at=timezone.now())
