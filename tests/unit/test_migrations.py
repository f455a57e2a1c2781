"""The models and the committed migrations agree."""

from io import StringIO

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_no_missing_migrations():
    out = StringIO()
    call_command("makemigrations", "atp", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()
