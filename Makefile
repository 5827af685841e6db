# `make run` serves the service; `make test` runs every check but the slow ones (`make test-slow`: the API suite on
# the distributed backend, fault and soak tests; CI runs both). Both create .venv and install on first use:
# `make run` the runtime dependencies only, `make test` (lint, typecheck, pytest) those, the [test] extras and the
# Python client (client/, installed editable so that its tests import it), and the Debian packages the tests use
# (chromium for the Swagger UI picture test; redis-server and postgresql, whose servers the tests start themselves
# on free loopback ports: never the packages' system services).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUN_STAMP  := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
HOST   ?= 127.0.0.1
PORT   ?= 8000
# Requests are logged by the app (JSON, with request ids); open streams get 10 s to finish on shutdown.
# --http: httptools with a bound on the request head (431 as it arrives; stock httptools parses any size first).
UVICORN_FLAGS ?= --no-access-log --timeout-graceful-shutdown 10 \
	--http service.api.server_protocol:HeadLimitedHttpToolsProtocol

.PHONY: run test test-slow lint typecheck pytest system-packages openapi client-models container-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Each stamp is remade when pyproject.toml changes. The test set includes the runtime set, so installing it
# also brings the runtime stamp up to date.
$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml client/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]' -e ./client
	touch $@ $(RUN_STAMP)

run: $(RUN_STAMP)
	$(BIN)/uvicorn service.main:app --host $(HOST) --port $(PORT) $(UVICORN_FLAGS)

test: lint typecheck pytest

test-slow: $(TEST_STAMP) system-packages
	$(BIN)/pytest -m slow

# Installed only when missing (as root, or with sudo).
system-packages:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
		sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		echo "installing Debian packages:$$missing"; \
		$$sudo apt-get update -qq && $$sudo apt-get install -y -qq $$missing; \
	fi

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(TEST_STAMP)
	$(BIN)/mypy
	$(BIN)/mypy --strict client/em_client client/scripts

pytest: $(TEST_STAMP) system-packages
	$(BIN)/pytest -m "not slow"

# Regenerate the committed schema after an API change (tests/api/test_openapi.py fails until you do).
openapi: $(RUN_STAMP)
	$(BIN)/python -m service.openapi openapi/openapi.json

# Then the client's types from it, and its sync half from the async one (tests/client/test_schema_drift.py fails
# until you do; a new endpoint also needs its method in client/em_client/_async.py and _calls.OPERATIONS).
client-models: $(TEST_STAMP)
	$(BIN)/python client/scripts/generate_models.py
	$(BIN)/python client/scripts/unasync.py

# Build the image, run it with compose, check the numbers and a restart, tear down (needs Docker).
# The single container (the default service), then the compose profile `cluster` (the distributed backend).
container-test:
	bash scripts/container-test.sh
	bash scripts/cluster-test.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
