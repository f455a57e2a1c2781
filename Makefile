# The two entry points of the README, plus the pieces they are made of.
# `make run`  — set up, then run ATP's main job on the embedded SQLite database.
# `make test` — set up, then lint and run the whole suite on SQLite and on PostgreSQL.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PG_URL ?= postgres://postgres@127.0.0.1:5432/atp

.PHONY: run test test-sqlite test-postgres lint services bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

run: $(VENV)/.installed
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py atp_examples
	$(PY) manage.py atpd --burst
	$(PY) manage.py atp_status

test: $(VENV)/.installed services lint test-sqlite test-postgres

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) manage.py makemigrations --check --dry-run -v0

test-sqlite: $(VENV)/.installed
	$(VENV)/bin/pytest -p no:cacheprovider

test-postgres: $(VENV)/.installed services
	DATABASE_URL=$(PG_URL) $(VENV)/bin/pytest -p no:cacheprovider

services:
	scripts/ensure-services

clean:
	rm -rf $(VENV) var
