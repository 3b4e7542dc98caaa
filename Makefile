# falip: one command per table. `make run` = the offline sandbox REC experiment; `make test` = the tests.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch that lies on this project's machines; on a GPU machine use e.g. TORCH_SPEC=torch
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
RUN := $(BIN)/falip-run
ARGS ?=

.PHONY: help install run test test-slow test-open-clip sandbox sandbox-reference shapes-rec shapes-cls shapes-ablation shapes-3d refcoco refcocop refcocog rec-table \
        rec bench bench-bias bench-rec bench-interventions bench-scaling bench-trims bench-precision train-sandbox bench-gpu clean

help:
	@echo "make run             offline sandbox REC experiment (default: shapes_rec) -> results/shapes_rec.csv"
	@echo "make test            the fast tier of the tests (minutes); make test-slow: the end-to-end tier; CI runs both"
	@echo "make test-open-clip  the open_clip towers' tests in .venv-open-clip (torch 2.14.1 + torchvision + open_clip)"
	@echo "make sandbox         shapes_rec + shapes_cls + shapes_ablation + shapes_3d -> results/ (ignored by git)"
	@echo "make sandbox-reference   re-record the committed results/sandbox/ at the current commit"
	@echo "make refcoco|refcocop|refcocog ARGS='dataset.root=/data/refer'   one REC table column set each"
	@echo "make rec-table ARGS='dataset.root=...'    the three REC runs + the paper-layout table"
	@echo "make bench           bias-overhead, REC-throughput, intervention, scaling, trims and precision benchmarks -> results/benchmarks/"
	@echo "make bench-gpu       on a GPU machine: correctness, precision, throughput, time plan -> results/benchmarks/gpu.csv (~8 min)"
	@echo "make train-sandbox   retrain the shipped sandbox CLIP (two stages, 40-48 min on 2 CPU cores)"
	@echo "Pass overrides with ARGS='key=value ...' (see falip-run --help)."

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/.installed

run: install
	$(RUN) $(ARGS)

test: install
	$(BIN)/python -m pytest -q -m "not slow"
test-slow: install
	$(BIN)/python -m pytest -q -m slow

# The open_clip towers' tests, in an environment of their own: open_clip imports torchvision, and the torchvision
# that matches the CPU torch above is not on this project's machines; torch 2.14.1 + torchvision 0.29.1 are.
OPEN_CLIP_VENV ?= .venv-open-clip
OPEN_CLIP_TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
$(OPEN_CLIP_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(OPEN_CLIP_VENV)
	$(OPEN_CLIP_VENV)/bin/python -m pip install -q --upgrade pip
	$(OPEN_CLIP_VENV)/bin/python -m pip install -q $(OPEN_CLIP_TORCH_SPEC)
	$(OPEN_CLIP_VENV)/bin/python -m pip install -q -e ".[dev,open_clip]"
	touch $@
test-open-clip: $(OPEN_CLIP_VENV)/.installed
	$(OPEN_CLIP_VENV)/bin/python -m pytest -q tests/model/test_open_clip_tower.py tests/model/test_timm_tower.py

shapes-rec: install
	$(RUN) experiment=shapes_rec $(ARGS)
shapes-cls: install
	$(RUN) experiment=shapes_cls $(ARGS)
shapes-ablation: install
	$(RUN) experiment=shapes_ablation $(ARGS)
shapes-3d: install
	$(RUN) experiment=shapes_3d $(ARGS)
sandbox: shapes-rec shapes-cls shapes-ablation shapes-3d
# Re-record the committed sandbox results (results/sandbox/) at the current, committed code.
sandbox-reference: install
	for e in shapes_rec shapes_cls shapes_ablation shapes_3d; do $(RUN) experiment=$$e run.output_dir=results/sandbox $(ARGS) || exit 1; done

refcoco: install
	$(RUN) experiment=refcoco_rec $(ARGS)
refcocop: install
	$(RUN) experiment=refcocop_rec $(ARGS)
refcocog: install
	$(RUN) experiment=refcocog_rec $(ARGS)
rec-table: refcoco refcocop refcocog
	$(RUN) experiment=rec_table
rec: rec-table

bench-bias: install
	$(BIN)/python scripts/bench_bias_overhead.py
bench-rec: install
	$(BIN)/python scripts/bench_rec.py
bench-interventions: install
	$(BIN)/python scripts/bench_interventions.py
bench-scaling: install
	$(BIN)/python scripts/bench_scaling.py
bench-trims: install
	$(BIN)/python scripts/bench_trims.py
bench-precision: install
	$(BIN)/python scripts/bench_precision.py
bench: bench-bias bench-rec bench-interventions bench-scaling bench-trims bench-precision
# On a GPU machine (a CUDA build of torch: TORCH_SPEC=torch): results/benchmarks/gpu.csv
bench-gpu: install
	$(BIN)/python scripts/bench_gpu.py --device cuda

train-sandbox: install
	$(BIN)/python scripts/train_sandbox_clip.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
