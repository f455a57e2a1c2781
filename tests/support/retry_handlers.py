"""Handlers for the retry tests."""


def retry_with_countdown(task_status, input):
    """Ask for a retry in ``input["countdown"]`` seconds."""
    task_status.retry(countdown=input["countdown"])
