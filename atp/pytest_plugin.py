"""ATP's pytest plugin (entry point ``pytest11``): fixtures for code that enqueues tasks.

Loaded automatically once ATP is installed; needs pytest-django.

- ``atp_eager``: ``ATP["EAGER"] = True`` for the test, so each enqueue runs its task (and
  what it enqueues) in the test's process when its transaction commits.
- ``atp_drain``: database access plus ``atp.testing.drain``; call it to run every due task
  now, and get the ids that ran.
"""

import pytest


@pytest.fixture
def atp_eager(settings):
    """Run enqueued tasks in-process, eagerly, for this test (see ``atp.testing``)."""
    settings.ATP = {**(getattr(settings, "ATP", None) or {}), "EAGER": True}
    return settings.ATP


@pytest.fixture
def atp_drain(db):
    """``atp.testing.drain``: run every due task in this process; returns the ids that ran."""
    from atp.testing import drain

    return drain
