"""A daemon's links to the events broker: the event relay and the remote-control node.

Both run in threads of their own with their own broker connections, so a slow or absent
broker never holds up the daemon's loop. Enabled only when ``ATP['EVENTS_BROKER_URL']``
is set.
"""

import logging

from django.core.exceptions import ImproperlyConfigured

try:
    from celery import Celery
except ImportError as exc:  # the system check says so first; this is for code that skips it
    raise ImproperlyConfigured(
        "ATP['EVENTS_BROKER_URL'] needs Celery, which is not installed: "
        "pip install 'django-atp[redis]' (Redis) or 'django-atp[amqp]' (RabbitMQ)"
    ) from exc

from atp.conf import settings
from atp.daemon.relay import Relay
from atp.daemon.remote import NodeState, RemoteControl

logger = logging.getLogger("atp.broker")


def celery_app(broker_url: str) -> Celery:
    """A Celery app used only for its event dispatcher and mailbox (never as a worker)."""
    app = Celery("atp", broker=broker_url, set_as_current=False)
    app.conf.update(
        # Notice an absent broker within seconds; the threads retry with their own backoff.
        broker_connection_timeout=2.0,
        broker_connection_retry_on_startup=False,
        # RabbitMQ confirms each event, so the relay moves its cursor only past events the
        # broker really took.
        broker_transport_options={"confirm_publish": True}
        if broker_url.startswith(("amqp", "pyamqp"))
        else {},
    )
    return app


class BrokerLinks:
    """The relay and remote-control threads of one daemon."""

    def __init__(self, daemon, hostname: str, broker_url: str):
        self.app = celery_app(broker_url)
        self.relay = Relay(self.app, hostname, freq=settings.HEARTBEAT_INTERVAL)
        state = NodeState(self.app, hostname, daemon.options.server_id, daemon)
        state.beat_now = lambda: self.relay.beat(**self.relay.stats)
        self.remote = RemoteControl(self.app, hostname, state)

    @classmethod
    def start(cls, daemon, hostname: str) -> "BrokerLinks | None":
        """Start both threads for ``daemon``; None when no broker is configured."""
        if not settings.EVENTS_BROKER_URL:
            return None
        links = cls(daemon, hostname, settings.EVENTS_BROKER_URL)
        links.relay.start()
        links.remote.start()
        logger.info("Events and remote control of %s on the broker", hostname)
        return links

    def beat(self, active: int, processed: int) -> None:
        """Called at each daemon heartbeat: the relay sends ``worker-heartbeat``."""
        self.relay.beat(active=active, processed=processed)

    def stop(self) -> None:
        """Stop remote control, then the relay (which sends ``worker-offline``)."""
        self.remote.stop()
        self.relay.stop()
