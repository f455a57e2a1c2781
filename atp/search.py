"""Kept for the documented path ``atp.search.search_q``: the module is ``atp.query.search``."""

from atp.query.search import *  # noqa: F403
from atp.query.search import search_q  # noqa: F401  (the documented name, explicitly)
