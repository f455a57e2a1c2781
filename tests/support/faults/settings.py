"""The host settings plus the fault-planting app (see ``tests.support.faults``)."""

from settings import *  # noqa: F403
from settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.support.faults.apps.FaultsConfig"]
