"""``inspect active_queues`` answers with kombu's queue descriptions, as Flower expects."""

import re
from pathlib import Path

import pytest

from atp.daemon import remote
from tests.support.factories import TaskTypeFactory

flower = pytest.importorskip("flower")


def keys_flowers_worker_page_reads() -> set[str]:
    """Every ``queue['…']`` key of Flower's worker page template (as installed)."""
    template = Path(flower.__file__).parent / "templates" / "worker.html"
    return set(re.findall(r"queue\['(\w+)'\]", template.read_text()))


@pytest.mark.django_db
def test_active_queues_has_every_key_flowers_worker_page_reads():
    TaskTypeFactory(queue="images")
    TaskTypeFactory(queue="mail")
    state = remote.NodeState(app=None, hostname="node@host", server_id="0x1")
    queues = remote.active_queues(state)
    wanted = keys_flowers_worker_page_reads()
    assert {"exclusive", "durable", "auto_delete", "routing_key", "name"} <= wanted
    assert [queue["name"] for queue in queues] == ["images", "mail"]
    for queue in queues:
        assert wanted <= set(queue), f"missing: {wanted - set(queue)}"
        assert queue["routing_key"] == queue["name"]
        assert queue["exchange"]["name"] == queue["name"]
        assert queue["exchange"]["type"] == "direct"
        assert queue["durable"] is True and queue["exclusive"] is False
