"""The ``atpd`` process: everything only the daemon runs (nothing else in ATP imports it).

``engine`` (the Daemon loop), ``pool`` (process and thread pools), ``child`` (a pool
process), ``runner`` (runs one handler), ``outcomes`` (how an attempt ended → the tracker
call), ``wakeup`` (LISTEN/NOTIFY), ``workers`` (the worker registry), ``db`` (connections),
``broker``/``relay``/``remote`` (Celery events and remote control), ``forkserver_preload``.

``Daemon``, ``WorkerOptions`` and ``POOLS`` are exported here (``from atp.daemon import
Daemon``). They are loaded on first use, not at import: a pool's child imports
``atp.daemon.child`` and must not pay for the engine, its broker links and their imports.
"""

__all__ = ["POOLS", "Daemon", "WorkerOptions"]


def __getattr__(name: str):
    """Load ``Daemon``, ``WorkerOptions`` and ``POOLS`` from ``atp.daemon.engine`` on first use."""
    if name in __all__:
        from atp.daemon import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
