# The two entry points promised by the README. Both set up the environment first (idempotent, seconds
# when nothing changed).
PY ?= $(or $(RECURSIVEDET_PYTHON),$(or $(RECURSIVEDET_VENV),.venv)/bin/python)

.PHONY: setup demo test lint study

setup:
	bash scripts/setup.sh

demo: setup
	$(PY) -m recursivedet.demo

# The evidence study of the README: the paper's ablation rows x 3 seeds at the demo's size, 2 runs at a time.
study: setup
	$(PY) -m recursivedet.study --jobs 2

# Two test processes by default: most tests run one thread, so one process leaves a core of these 2-core machines idle.
TEST_WORKERS ?= 2

test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS)

lint: setup
	$(PY) -m ruff check . && $(PY) -m ruff format --check .
