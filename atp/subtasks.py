"""Kept for the documented ``atp.subtasks.get_progress``: the module is atp.tracker.subtasks."""

from atp.tracker.subtasks import *  # noqa: F403
from atp.tracker.subtasks import get_progress  # noqa: F401  (the documented name, explicitly)
