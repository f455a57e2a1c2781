"""ATP: a database-backed task queue for Django, run by the ``manage.py atpd`` daemon."""

from atp.decorators import task

__version__ = "0.1.0"
__all__ = ["task"]
