# The two commands: `make run` (set up, then serve on the embedded default) and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast bench bench-quick install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/reserves serve --host 127.0.0.1 --port 3000

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Only the fast tests that need no real service.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not real and not soak" -k "not redis" $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/reserves bench

bench-quick: $(STAMP)
	$(BIN)/reserves bench --quick

clean:
	rm -rf $(VENV) .pytest_cache reserves.db
