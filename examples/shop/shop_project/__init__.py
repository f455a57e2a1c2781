"""A small Django project that uses ATP only through ``@task`` (no ``register_task_type``)."""
