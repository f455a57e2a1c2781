"""The operations console's extra URLs under the task admin: bulk actions and live JSON."""

from django.urls import path

from atp.admin import bulk


def console_urls(model_admin, wrap) -> list:
    """URL patterns of the console pages, each wrapped by the admin site's login check."""
    return [
        path(
            "bulk/",
            wrap(lambda request: bulk.bulk_view(model_admin, request)),
            name="atp_taskinstance_bulk",
        ),
    ]
