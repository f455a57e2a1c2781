# The two entry points of the README, plus the pieces they are made of.
# `make run`  — set up, then run ATP's main job on the embedded SQLite database.
# `make test` — set up, then lint and run the suite on every combination ATP supports:
#   test-sqlite     Django 5.2, Python 3.11, SQLite
#   test-postgres   Django 5.2, Python 3.11, PostgreSQL + psycopg2 (also the slow tests)
#   test-psycopg3   Django 5.2, Python 3.11, PostgreSQL + psycopg 3 (no psycopg2 installed)
#   test-django6    Django 6.x, Python 3.12+, SQLite
#   test-wheel      the built wheel installed (not editable) in a clean venv: admin and API
# Each leg has its own venv (made once, remade when pyproject.toml changes) and its own
# databases, so legs can be run alone (`make test-psycopg3`) or side by side: `make test`
# runs TEST_JOBS legs at a time (default 2; the tests mostly wait on daemons, not on the CPU),
# each leg's output printed whole when it ends.

PYTHON ?= python3
# Django 6 needs Python 3.12 or newer: the newest pyenv 3.12/3.13, else one on the PATH.
PYTHON_DJANGO6 ?= $(or $(lastword $(sort $(wildcard $(HOME)/.pyenv/versions/3.1[23].*/bin/python3))),$(shell command -v python3.13 || command -v python3.12))
VENV ?= .venv
VENV_PSYCOPG3 ?= .venv-psycopg3
VENV_DJANGO6 ?= .venv-django6
PY := $(VENV)/bin/python
# PostgreSQL database of the tests (pytest-django adds "test_"); each leg appends its name.
PG_URL ?= postgres://postgres@127.0.0.1:5432/atp
# Extra pytest arguments for every leg, e.g. PYTEST_ARGS='-k "not postgresql_restart"'.
PYTEST_ARGS ?=
PYTEST = pytest -p no:cacheprovider -q $(PYTEST_ARGS)
# The slow crash and load tests (marker "slow") run on the psycopg2 leg only.
NOT_SLOW := -m "not slow"
WHEEL_DIR := var/wheel-test
TEST_JOBS ?= 2

.PHONY: run test test-sqlite test-postgres test-psycopg3 test-django6 test-wheel test-examples lint services clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

# psycopg 3 only: without psycopg2 installed nothing can fall back to it unseen.
$(VENV_PSYCOPG3)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV_PSYCOPG3)
	$(VENV_PSYCOPG3)/bin/pip install -q --upgrade pip
	$(VENV_PSYCOPG3)/bin/pip install -q -e '.[dev,postgres]'
	$(VENV_PSYCOPG3)/bin/pip uninstall -q -y psycopg2-binary
	touch $@

$(VENV_DJANGO6)/.installed: pyproject.toml
	@test -n "$(PYTHON_DJANGO6)" || { echo "Django 6 needs Python >= 3.12 (set PYTHON_DJANGO6)"; exit 1; }
	$(PYTHON_DJANGO6) -m venv $(VENV_DJANGO6)
	$(VENV_DJANGO6)/bin/pip install -q --upgrade pip
	$(VENV_DJANGO6)/bin/pip install -q -e '.[dev,postgres]' 'Django>=6,<7'
	$(VENV_DJANGO6)/bin/pip uninstall -q -y psycopg2-binary
	touch $@

run: $(VENV)/.installed
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py atp_examples
	$(PY) manage.py atpd --burst
	$(PY) manage.py atp_status

test: $(VENV)/.installed services lint
	$(MAKE) --no-print-directory -j$(TEST_JOBS) -O \
		test-postgres test-sqlite test-psycopg3 test-django6 test-wheel test-examples

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) manage.py makemigrations --check --dry-run -v0

test-sqlite: $(VENV)/.installed
	ATP_VAR_DIR=var/sqlite ATP_EXPECT_DRIVER=sqlite $(VENV)/bin/$(PYTEST) $(NOT_SLOW)

test-postgres: $(VENV)/.installed services
	DATABASE_URL=$(PG_URL) ATP_EXPECT_DRIVER=psycopg2 $(VENV)/bin/$(PYTEST)

test-psycopg3: $(VENV_PSYCOPG3)/.installed services
	DATABASE_URL=$(PG_URL)_psycopg3 ATP_EXPECT_DRIVER=psycopg ATP_VAR_DIR=var/psycopg3 \
		$(VENV_PSYCOPG3)/bin/$(PYTEST) $(NOT_SLOW)

# On SQLite: PostgreSQL with psycopg 3 is test-psycopg3's (DATABASE_URL=... make test-django6
# runs this leg on PostgreSQL too).
test-django6: $(VENV_DJANGO6)/.installed services
	ATP_VAR_DIR=var/django6 ATP_EXPECT_DJANGO=6 $(VENV_DJANGO6)/bin/$(PYTEST) $(NOT_SLOW)

# The wheel, installed with no extras into a venv of its own (its test tools are kept; the
# wheel is rebuilt and reinstalled each run); the tests run from a copy of the project's tests
# and settings (no atp/ beside them), so `atp` can only come from the install:
# tests/unit/test_packaging.py checks that it does (ATP_EXPECT_INSTALLED).
$(WHEEL_DIR)/venv/.installed: pyproject.toml
	rm -rf $(WHEEL_DIR)/venv
	$(PYTHON) -m venv $(WHEEL_DIR)/venv
	$(WHEEL_DIR)/venv/bin/pip install -q --upgrade pip
	$(WHEEL_DIR)/venv/bin/pip install -q pytest pytest-django factory-boy dj-database-url
	touch $@

test-wheel: $(VENV)/.installed $(WHEEL_DIR)/venv/.installed
	rm -rf $(WHEEL_DIR)/dist $(WHEEL_DIR)/project
	mkdir -p $(WHEEL_DIR)/project
	$(VENV)/bin/pip wheel -q --no-deps . -w $(WHEEL_DIR)/dist
	$(WHEEL_DIR)/venv/bin/pip uninstall -q -y django-atp 2>/dev/null || true
	$(WHEEL_DIR)/venv/bin/pip install -q $(WHEEL_DIR)/dist/*.whl
	cp -r tests settings manage.py pyproject.toml $(WHEEL_DIR)/project/
	cd $(WHEEL_DIR)/project && ATP_EXPECT_INSTALLED=1 ATP_EXPECT_DRIVER=sqlite \
		../venv/bin/$(PYTEST) --rootdir=. tests/unit/test_packaging.py \
		tests/unit/test_admin.py tests/unit/test_admin_actions.py \
		tests/unit/test_admin_dashboard.py tests/unit/test_api.py

# The shop example's own tests (eager mode, drain(), one atpd run), on SQLite and PostgreSQL.
test-examples: $(VENV)/.installed services
	cd examples/shop && ../../$(VENV)/bin/pytest -p no:cacheprovider
	cd examples/shop && DATABASE_URL=$(PG_URL)_shop ../../$(VENV)/bin/pytest -p no:cacheprovider

services:
	scripts/ensure-services

clean:
	rm -rf $(VENV) $(VENV_PSYCOPG3) $(VENV_DJANGO6) var
