"""Imported only by the daemon's forkserver: set Django up once, before any child forks.

Children forked from the server then start ready, and — the point of the forkserver — they
inherit no database connection: the server process never opens one. The settings are the
daemon's, however it was given them (atp.daemon.child_setup). A failed set-up is not raised
here (it would kill the forkserver with a message nobody reads): each child reports it to
the daemon, which stops.
"""

from atp.daemon import child_setup

child_setup.setup()
