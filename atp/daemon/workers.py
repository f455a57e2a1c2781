"""The Worker rows: each atpd registers itself, heartbeats, and says when it stops."""

import os
import socket

from django.utils import timezone

from atp.models import Worker


def register_worker(server_id: str) -> Worker:
    """Record this process as the running daemon ``server_id`` (re-registering clears a stop)."""
    now = timezone.now()
    worker, _ = Worker.objects.update_or_create(
        server_id=server_id,
        defaults={
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": now,
            "heartbeat_at": now,
            "stopped_at": None,
        },
    )
    return worker


def beat(server_id: str) -> bool:
    """Refresh the daemon's heartbeat; False if it was declared lost (its row is stopped).

    A daemon that finds itself declared lost must assume its tasks were re-enqueued and
    handed to others: its running attempts are stale.
    """
    return bool(
        Worker.objects.running().filter(server_id=server_id).update(heartbeat_at=timezone.now())
    )


def stop_worker(server_id: str) -> None:
    """Mark the daemon as stopped (a clean exit)."""
    Worker.objects.filter(server_id=server_id).update(stopped_at=timezone.now())
