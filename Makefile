# The two entry points promised by the README. Both set up the environment first (idempotent, seconds
# when nothing changed).
PY ?= $(or $(RECURSIVEDET_PYTHON),$(or $(RECURSIVEDET_VENV),.venv)/bin/python)

.PHONY: setup demo test lint

setup:
	bash scripts/setup.sh

demo: setup
	$(PY) -m recursivedet.demo

test: setup
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check . && $(PY) -m ruff format --check .
