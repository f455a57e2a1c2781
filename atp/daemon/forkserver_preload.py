"""Imported only by the daemon's forkserver: set Django up once, before any child forks.

Children forked from the server then start ready, and — the point of the forkserver — they
inherit no database connection: the server process never opens one.
"""

import django
from django.apps import apps

if not apps.ready:
    django.setup()

import atp.daemon.runner  # noqa: E402,F401  (pre-import the handler-running code for the children)
