"""What the installed package holds (make test-wheel runs this against the built wheel).

With ``ATP_EXPECT_INSTALLED=1`` (set by make test-wheel) ``atp`` must come from
site-packages, not from a checkout: the other tests of that leg then prove that the wheel
alone serves the admin and the API.
"""

import os
from importlib.util import find_spec
from pathlib import Path

import pytest

import atp

PACKAGE = Path(atp.__file__).resolve().parent


def test_atp_is_the_installed_wheel_when_the_leg_says_so():
    if os.environ.get("ATP_EXPECT_INSTALLED") != "1":
        pytest.skip("not the installed-wheel leg (make test-wheel)")
    assert PACKAGE.parent.name == "site-packages", atp.__file__
    assert not (PACKAGE.parent / "tests").exists()  # the tests are a copy elsewhere


def test_the_package_holds_its_templates_migrations_and_typing_marker():
    templates = {path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.html")}
    assert "templates/admin/atp/dashboard.html" in templates
    assert any(name.startswith("templates/admin/atp/taskinstance/") for name in templates)
    assert (PACKAGE / "migrations" / "0001_initial.py").is_file()
    assert (PACKAGE / "py.typed").is_file()


def test_benchmark_code_lives_in_its_own_subpackage():
    assert (PACKAGE / "bench" / "__init__.py").is_file()
    assert not any(path.name.startswith("bench") for path in PACKAGE.glob("*.py"))


def test_the_core_imports_without_celery_when_celery_is_absent():
    """The wheel leg installs no extras: the admin and API tests pass there without Celery."""
    if os.environ.get("ATP_EXPECT_INSTALLED") != "1":
        pytest.skip("not the installed-wheel leg (make test-wheel)")
    assert find_spec("celery") is None
