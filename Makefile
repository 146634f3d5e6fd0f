# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv and
# installs the pinned stack (pyproject.toml) the first time, then reuses it.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export MLFLOW_DISABLE_TELEMETRY := true
export BENTOML_DO_NOT_TRACK := true
export BENTOML_HOME := $(CURDIR)/bentoml_home

.PHONY: demo test lint bench clean-store

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (Python 3.11)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,spark]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/persuade demo --config configs/ggl2008.yaml

test: $(STAMP)
	$(BIN)/ruff check features training serving tests bench
	$(BIN)/python -m pytest -q -ra --durations=20 -n 2 --dist loadgroup

lint: $(STAMP)
	$(BIN)/ruff check features training serving tests bench

bench: $(STAMP)
	$(BIN)/python bench/train_bench.py

clean-store:
	rm -rf mlruns/mlflow.db mlruns/artifacts
