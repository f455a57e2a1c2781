"""Settings of ``atpd`` subprocesses started by the tests: the host settings on the test DB.

The test run's database name (``test_…`` on PostgreSQL, ``var/test_atp.sqlite3`` on SQLite)
comes in ``ATP_TEST_DATABASE_NAME``, so a daemon sees exactly what the test wrote.
"""

import os

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES

DATABASES["default"]["NAME"] = os.environ["ATP_TEST_DATABASE_NAME"]
