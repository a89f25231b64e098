# Targets for development, tests and the demo. When DATABASE_URL or REDIS_URL is unset,
# the targets start private PostgreSQL and Redis servers under .stack/ and reuse them
# between commands; `make stop` stops them.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=
HOST ?= 127.0.0.1
PORT ?= 8080

# Evaluates the export lines of the private stack for whatever the environment lacks.
WITH_STACK = stack_env="$$($(BIN)/python -m postfuze_imports.devstack env)" && eval "$$stack_env" &&
# Stops, on exit, only the servers this command started.
STOP_STARTED = trap 'if [ -n "$$POSTFUZE_STACK_STARTED" ]; then $(BIN)/python -m postfuze_imports.devstack stop $$POSTFUZE_STACK_STARTED; fi' EXIT;

.PHONY: install env web worker migrate demo test lint typecheck bench stop clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(INSTALLED)

# Prints export lines for the private stack: eval "$(make -s env)" in a shell, then run
# .venv/bin/postfuze-imports commands there.
env: install
	@$(BIN)/python -m postfuze_imports.devstack env

migrate: install
	@$(WITH_STACK) $(BIN)/postfuze-imports migrate

web: install
	@$(WITH_STACK) $(BIN)/postfuze-imports migrate && exec $(BIN)/postfuze-imports web --host $(HOST) --port $(PORT)

worker: install
	@$(WITH_STACK) $(BIN)/postfuze-imports migrate && exec $(BIN)/postfuze-imports worker

demo: install
	@$(WITH_STACK) $(BIN)/postfuze-imports migrate && $(BIN)/postfuze-imports demo

lint: install
	$(BIN)/ruff check postfuze_imports tests bench
	$(BIN)/ruff format --check postfuze_imports tests bench

typecheck: install
	$(BIN)/mypy

test: lint typecheck
	@$(WITH_STACK) $(STOP_STARTED) $(BIN)/pytest $(PYTEST_ARGS)

bench: install
	@$(WITH_STACK) $(STOP_STARTED) $(BIN)/python -m bench

stop: install
	@$(BIN)/python -m postfuze_imports.devstack stop

clean: stop
	rm -rf .stack $(VENV) .pytest_cache .mypy_cache .ruff_cache
