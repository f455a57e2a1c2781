"""The ``daemons`` fixture: real ``manage.py atpd`` processes (``tests.support.atpd_process``)."""

import pytest

from tests.support.atpd_process import Daemons


@pytest.fixture
def daemons(tmp_path):
    """Start atpd subprocesses against the test database; all are killed afterwards."""
    runner = Daemons(tmp_path)
    yield runner
    runner.stop_all()
