# The two commands: `make run` (set up, then serve on the embedded default) and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-soak test-fast bench bench-quick install lock clean

# Installs the versions pinned in constraints.txt (refresh them with `make lock`).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/reserves serve --host 127.0.0.1 --port 3000

# Everything but the long variants marked `soak` (`make test-soak`; CI runs both).
test: $(STAMP)
	$(BIN)/python -m pytest -m "not soak" $(PYTEST_ARGS)

# The long load, fuzz and fault variants: a few minutes. Exit code 5 (PYTEST_ARGS picked
# files without soak tests) is not a failure.
test-soak: $(STAMP)
	$(BIN)/python -m pytest -m soak $(PYTEST_ARGS) || [ $$? -eq 5 ]

# Only the fast tests that need no real service: the embedded fakeredis half of every
# `backend` test and the pure unit tests (the real-Redis half is marked `real`).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not real and not soak" $(PYTEST_ARGS)

# The benchmarks need the `bench` extra (matplotlib, uvloop, py-spy) on top of the usual install,
# and wrk for the HTTP scenario (Debian's package; redis-benchmark comes with redis-tools).
# `bench` writes the committed results (benchmarks/); `bench-quick` writes into .tmp/bench-quick.
BENCH_TOOLS = command -v wrk >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq \
	&& DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; } \
	|| echo "make bench: wrk could not be installed; reserves bench will say what to do"

bench: $(STAMP)
	$(BIN)/pip install -q -c constraints.txt -e ".[bench]"
	@$(BENCH_TOOLS)
	$(BIN)/reserves bench --out benchmarks

bench-quick: $(STAMP)
	$(BIN)/pip install -q -c constraints.txt -e ".[bench]"
	@$(BENCH_TOOLS)
	$(BIN)/reserves bench --quick --out .tmp/bench-quick

# A fresh venv with the newest versions pyproject.toml allows, frozen into constraints.txt.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install -q --upgrade pip
	.venv-lock/bin/pip install -q -e ".[test,bench]"
	{ echo "# Pinned versions that make test / make run / make bench install (pip install -c constraints.txt)."; \
	  echo "# Refresh: make lock (a clean venv, the newest versions pyproject.toml allows, frozen here)."; \
	  .venv-lock/bin/pip freeze --exclude-editable; } > constraints.txt
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) .pytest_cache reserves.db
