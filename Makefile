# `make run`  : installs the project with its extras into .venv (versions of constraints.txt), then runs the main job on the embedded default.
# `make test` : the same install, then runs the test suite (what CI runs: .ci/run).
# `make test-fast` : the same, without the tests marked slow (those that run a pipeline or start a server).
# `make demo` : eagle_coco on the first 2 images in demo/ (under half a minute; its own data/ and mlruns/).
# `make ui`   : mlflow's user interface on mlruns/ (http://127.0.0.1:5000); `make viz` then `make viz-serve`: the lineage.
# `make paper MODEL=qwen2_5_vl_3b` : the paper's tables for one model on a GPU (docs/paper.md); first
#               `make paper-cost MODEL=...` : the forward passes per table and the hours they take.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export KEDRO_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: run test test-fast demo ui train viz viz-serve paper paper-cost

# The project with its extras (EXTRAS), each distribution at the exact version of constraints.txt (docs/install.md).
EXTRAS ?= test
$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

run: $(BIN)/.installed
	$(BIN)/kedro run --pipelines=eagle_coco

# A smoke run for people trying the project out: eagle_coco end to end on the first DEMO_IMAGES images, in demo/
# (its own data/, mlruns/ and report; data/ and `make run`'s outputs are not touched), 8 regions and 8 pixel steps
# (demo.py's DEMO_PARAMS): 23 s wall in all on a quiet 2-core machine (28 CPU seconds; the pipeline 14 s of it).
# The former demo (4 images, 16 regions, 16 steps) took 170 CPU seconds on a loaded machine, against 76 for this one.
DEMO_IMAGES ?= 2
demo: $(BIN)/.installed
	$(BIN)/python -m eagle_pipelines.demo --images $(DEMO_IMAGES)

# mlflow's user interface on the runs in mlruns/ (the same as `kedro mlflow ui`; docs/tracking.md)
ui: $(BIN)/.installed
	$(BIN)/kedro mlflow ui

test: $(BIN)/.installed
	$(BIN)/python -m pytest

test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest -m "not slow"

# Re-trains the shipped embedded model (data/06_models/toy_qwen2_5_vl), about 15 minutes on 2 CPU cores.
train: $(BIN)/.installed
	$(BIN)/kedro run --pipelines=toy_model

viz: $(BIN)/.installed
	$(BIN)/kedro viz build --include-previews

# The lineage in a browser: build/ served on 127.0.0.1 (a page opened as file:// stays blank: the app fetches its
# data over HTTP). VIZ_VIEW opens eagle_coco with its answers selected: kedro-viz then keeps the zoom (~90 %) when
# a namespace expands, instead of fitting the whole graph (~35 %, unreadable); tests/integration/test_browser.py.
VIZ_PORT ?= 4141
VIZ_VIEW ?= ?pid=eagle_coco&sn=eagle_coco.answers
viz-serve: $(BIN)/.installed
	test -f build/index.html || $(MAKE) viz
	@echo "kedro-viz: http://127.0.0.1:$(VIZ_PORT)/$(VIZ_VIEW)  (one stage alone: http://127.0.0.1:$(VIZ_PORT)/?pid=eagle_coco&fid=eagle_coco.explanation; Ctrl+C stops)"
	$(BIN)/python -m http.server $(VIZ_PORT) --bind 127.0.0.1 --directory build

# The paper's tables for one model preset (conf/paper/globals.yml) with `--env=paper`: the cost first, then each
# pipeline (a failed one does not stop the next), then how many of the paper's cells the comparisons cover.
# PARAMS: more `--params` (e.g. PARAMS=eval_data.coco.images=20); COST_ARGS: e.g. --measure or --seconds-per-pass 0.03.
MODEL ?= qwen2_5_vl_3b
PAPER_PIPELINES ?= eagle_coco eagle_mmvp
PARAMS ?=
COST_ARGS ?=
comma := ,

paper-cost: $(BIN)/.installed
	$(BIN)/python -m eagle_pipelines.paper_cost --model $(MODEL) $(COST_ARGS)

paper: $(BIN)/.installed
	$(BIN)/python -m eagle_pipelines.paper_cost --model $(MODEL) $(COST_ARGS)
	status=0; for p in $(PAPER_PIPELINES); do \
	  $(BIN)/kedro run --pipelines=$$p --env=paper --params model=$(MODEL)$(if $(PARAMS),$(comma)$(PARAMS)) || status=1; \
	done; \
	$(BIN)/python -m eagle_pipelines.reporting.paper $(foreach p,$(PAPER_PIPELINES),data/08_reporting/$(p)_paper/$(MODEL)/paper_comparison.csv) || true; \
	exit $$status
