"""The host settings with Django's default SQLite options: no IMMEDIATE, no WAL, timeout 5.

For the test that proves a lock timeout never costs a task an attempt (issue 13.6).
"""

from settings import *  # noqa: F403
from settings import DATABASES

DATABASES["default"]["OPTIONS"] = {}
