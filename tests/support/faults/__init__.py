"""A test-only Django app that plants faults in a real ``atpd`` (never installed in production).

The acceptance tests start daemons with ``DJANGO_SETTINGS_MODULE=tests.support.faults.settings``
and ``ATP_TEST_FAULTS`` (JSON: fault name → its argument). When the app is ready it wraps
the functions the daemon's loop calls, so each step (claim, hand-over, outcome, sweep,
heartbeat, relay) can be made to fail with an error, or the daemon to freeze itself while
it holds a row lock. Every fault raises ``PlantedFault`` (a ValueError: an error, not an
outage), so the logs name it.
"""
