# `make run` serves the service; `make test` runs every check. Both create .venv and install on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8000
# Requests are logged by the app (JSON, with request ids); open streams get 10 s to finish on shutdown.
UVICORN_FLAGS ?= --no-access-log --timeout-graceful-shutdown 10

.PHONY: run test lint typecheck pytest openapi bench container-test clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/uvicorn service.main:app --host $(HOST) --port $(PORT) $(UVICORN_FLAGS)

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

# Regenerate the committed schema after an API change (tests/api/test_openapi.py fails until you do).
openapi: $(STAMP)
	$(BIN)/python -m service.openapi openapi/openapi.json

# Build the image, run it with compose, check the numbers and a restart, tear down (needs Docker).
container-test:
	bash scripts/container-test.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
