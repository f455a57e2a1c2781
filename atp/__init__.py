"""ATP: a database-backed task queue for Django, run by the ``manage.py atpd`` daemon."""

__version__ = "0.1.0"
