# The two README commands: `make demo` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV ?= .venv
DJANGO ?= django>=5.2,<5.3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell echo '$(DJANGO)' | tr -c 'a-zA-Z0-9.\n' '_')
TEST_ENV := DJANGO_SETTINGS_MODULE=tests.settings

.PHONY: install demo test lint check-django bench soak clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,demo]' '$(DJANGO)'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py dt_demo

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(TEST_ENV) $(PY) -m mypy

check-django: $(STAMP)
	$(PY) tests/services.py
	$(TEST_ENV) $(PY) manage.py check --fail-level WARNING
	$(TEST_ENV) $(PY) manage.py makemigrations --check --dry-run

test: $(STAMP) lint check-django
	PYTHONWARNINGS=error::DeprecationWarning,error::ResourceWarning $(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m benchmarks.run_all $(BENCH_ARGS)

soak: $(STAMP)
	$(PY) tests/services.py
	SOAK_MINUTES=$${SOAK_MINUTES:-8} $(PY) -m tests.soak

clean:
	rm -rf .venv .venv-* .demo .soak .pytest_cache .ruff_cache .mypy_cache *.egg-info
