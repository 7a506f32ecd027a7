# Two commands on a fresh machine (Python 3.11 and make):
#   make demo   -> creates .venv, installs pinned deps, runs the end-to-end demo
#   make test   -> creates .venv if missing, installs, runs the whole test suite
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.docket-installed

.PHONY: setup demo test test-fast lint bench clean-demo

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first: pins the CPU wheel so nothing later pulls a multi-GB CUDA build
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[all,dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/docket demo

test: setup
	bash scripts/ensure_test_services.sh
	$(BIN)/python -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

# The inner loop: everything but the tests marked slow (training, Ray, concurrency, demo, wheel).
test-fast: setup
	bash scripts/ensure_test_services.sh
	$(BIN)/python -m pytest -n 2 --dist loadgroup -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/python benchmarks/verdict.py
	$(BIN)/python benchmarks/probe.py
	$(BIN)/python benchmarks/speculative.py
	$(BIN)/python benchmarks/ledger.py
