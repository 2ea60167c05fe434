# `make run`  : installs everything into .venv, then runs the main job on the embedded default.
# `make test` : installs everything into .venv, then runs the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export KEDRO_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: run test train viz

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

run: $(BIN)/.installed
	$(BIN)/kedro run --pipeline=eagle_coco

test: $(BIN)/.installed
	$(BIN)/python -m pytest

# Re-trains the shipped embedded model (data/06_models/toy_qwen2_5_vl), about 15 minutes on 2 CPU cores.
train: $(BIN)/.installed
	$(BIN)/kedro run --pipeline=toy_model

viz: $(BIN)/.installed
	$(BIN)/kedro viz build --include-previews
