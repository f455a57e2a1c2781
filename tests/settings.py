"""Settings of the test run: the host project's, plus a test app with ``@task`` functions.

``tests.taskapp`` is installed only here, so ``make run``'s database never sees its types.
Daemons started by the tests inherit ``DJANGO_SETTINGS_MODULE`` and find its tasks too.
"""

from settings import *  # noqa: F403
from settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.taskapp"]
