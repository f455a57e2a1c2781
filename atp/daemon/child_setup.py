"""Django set-up of the pool's child processes, with exactly the daemon's settings.

The children (and the forkserver they fork from) are fresh interpreters: they see the
daemon's environment, not its memory. Settings from a module travel as
``DJANGO_SETTINGS_MODULE``; settings given to ``settings.configure()`` (scripts, reusable
apps' test suites) or changed by ``override_settings`` exist only in the daemon, so
``export_settings`` pickles every value the daemon sees into a private file whose path the
children find in ``ATP_CHILD_SETTINGS``.

A child that cannot set Django up reports why (``failure``) instead of serving tasks: the
pool then refuses to start (atp.daemon.pool), before the daemon claims anything.
"""

import os
import pickle
import tempfile
import traceback

#: Environment variable naming the file of pickled ``settings.configure()`` values.
SETTINGS_FILE_ENV = "ATP_CHILD_SETTINGS"

_failure: str | None = None


class ChildSettingsError(Exception):
    """The daemon's settings cannot be handed to its pool's children."""


def export_settings() -> str | None:
    """Make this process's settings those of the children started from now on.

    Returns the path of the file written for ``settings.configure()`` values (the caller
    removes it when the pool stops), or None when the settings come from a module.
    """
    from django.conf import Settings, settings

    if not settings.configured:  # nothing set up yet: the children find the same module
        return None
    held = settings._wrapped  # type: ignore[misc]  # the LazySettings' holder
    if isinstance(held, Settings):
        # --settings and DJANGO_SETTINGS_MODULE both end up here; say which one won.
        os.environ["DJANGO_SETTINGS_MODULE"] = held.SETTINGS_MODULE
        os.environ.pop(SETTINGS_FILE_ENV, None)
        return None
    # settings.configure(), or overrides on top of either (override_settings): the children
    # get every value the daemon sees, defaults included.
    values = {name: getattr(held, name) for name in dir(held) if name.isupper()}
    try:
        data = pickle.dumps(values, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - any value pickle refuses
        raise ChildSettingsError(
            "the daemon's settings (from settings.configure() or override_settings) cannot "
            f"be passed to the pool's child processes ({exc}); use a settings module or "
            "--pool threads"
        ) from exc
    handle, path = tempfile.mkstemp(prefix="atpd-settings-", suffix=".pickle")  # mode 0600
    with os.fdopen(handle, "wb") as file:
        file.write(data)
    os.environ[SETTINGS_FILE_ENV] = path
    return path


def setup() -> str | None:
    """Set Django up in a child (or the forkserver) with the daemon's settings.

    Also imports the handler-running code, so that the forkserver's children start ready.

    Returns None on success, else what went wrong (also kept for ``failure``): a failed
    ``django.setup()`` cannot be retried in the same process, so the first reason stands.
    """
    global _failure
    if _failure is not None:
        return _failure
    try:
        import django
        from django.apps import apps
        from django.conf import settings

        path = os.environ.get(SETTINGS_FILE_ENV)
        if path and not settings.configured:
            with open(path, "rb") as file:
                # Written by the daemon that started this process, readable by its user only.
                settings.configure(**pickle.load(file))  # noqa: S301
        if not apps.ready:
            django.setup()
        import atp.daemon.runner  # noqa: F401  (the code the children run: import it now)
    except Exception as exc:  # noqa: BLE001 - reported to the daemon, which stops
        _failure = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
    return _failure


def failure() -> str | None:
    """Why this process could not set Django up, if it could not."""
    return _failure
