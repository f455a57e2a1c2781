"""Handlers for the admin's browser test: one fails while an outage flag file exists."""

import os


def flaky(task_status, input):
    """Fail while ``input["outage_flag"]`` exists (an upstream outage), else store a report."""
    if os.path.exists(input["outage_flag"]):
        raise RuntimeError(f"upstream service unavailable while rendering {input['report']}")
    task_status.store_response(f"report {input['report']}: 42 rows", "text/plain")
