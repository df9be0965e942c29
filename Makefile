# One target per stage; `make all` runs them in order. Every variable can be set on the command line:
#   make all DATA=../shared/data/nyala WORK=/tmp/nyala BUDGET=2 SUBMISSION=/tmp/nyala/sub.csv
DATA ?= data
WORK ?= work
MODEL ?= lite0_head
FOLDS ?= all
BUDGET ?=
SUBMISSION ?= submissions/submission.csv
PIPELINE ?= configs/pipeline.yaml
# Empty: folds/<data set>-<hash>.csv for the data cached in WORK (two data sets never share one).
FOLDS_FILE ?=
SET ?=
NPROC ?= 1
# Several machines (NNODES > 1): run `make train` on each with the same NNODES, NPROC, RDZV_ENDPOINT
# (host:port of any one of them) and RDZV_ID; torchrun's c10d rendezvous assigns the ranks.
NNODES ?= 1
RDZV_ENDPOINT ?=
RDZV_ID ?= whale
# Which faiss build to install: gpu where an NVIDIA driver is found, else cpu (one of them, never both).
FAISS ?= $(if $(shell command -v nvidia-smi 2>/dev/null),gpu,cpu)

VENV := .venv
WHALE := $(VENV)/bin/whale
PYTHON := $(VENV)/bin/python
# One stamp per faiss build: a venv made on a CPU machine and reused on a GPU one is reinstalled.
INSTALLED = $(VENV)/.installed-$(FAISS)
FOLDS_ARG = $(if $(FOLDS_FILE),--folds-file $(FOLDS_FILE))
COMMON = --work $(WORK) --pipeline $(PIPELINE) $(foreach s,$(SET),--set $(s))
MODEL_ARGS = $(COMMON) --model $(MODEL) $(FOLDS_ARG)

DEMO_WORK := work/demo
DEMO_DATA := $(DEMO_WORK)/data
DEMO_ARGS := DATA=$(DEMO_DATA) WORK=$(DEMO_WORK) MODEL=lite0_head PIPELINE=configs/demo.yaml \
             FOLDS_FILE=folds/demo.csv SUBMISSION=submissions/demo.csv

.PHONY: install help demo test test-slow gpu-check bench bench-losses bench-retrieval bench-ensemble bench-boxes bench-catalogue catalogue-humpback bench-local bench-humpback boxes synth bundle catalogue-init catalogue-queue catalogue-evaluate preprocess folds train embed knn single train-all \
        ensemble submit cv all clean report identify serve

install: $(INSTALLED)

# The stages, in order, from the stage registry (pipeline/stages/__init__.py); needs no install.
help:
	@echo "make <stage target> [DATA=... WORK=... MODEL=... SET=...]; the stages (whale <stage> --help):"
	@$(if $(wildcard $(PYTHON)),$(PYTHON),python3) -m pipeline.cli stages

# torch and torchvision first, pinned: this machine serves exactly these from its own disk. Every
# faiss build installs the same `faiss` package, so all of them go before the chosen one is installed
# (one left behind would shadow or half-delete it).
$(INSTALLED): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet torch==2.14.1 torchvision==0.29.1
	rm -f $(VENV)/.installed $(VENV)/.installed-*
	$(VENV)/bin/pip uninstall --quiet --yes faiss-cpu faiss-gpu faiss-gpu-cu12 faiss-gpu-cu11 2>/dev/null || true
	$(VENV)/bin/pip install --quiet -e '.[dev,weights,$(FAISS)]'
	$(VENV)/bin/python -c "import faiss; print('faiss', faiss.__version__, 'sees', faiss.get_num_gpus(), 'GPU(s)')"
	touch $@

demo: install
	$(WHALE) synth --out $(DEMO_DATA)
	$(MAKE) --no-print-directory all $(DEMO_ARGS)
	@echo "================ demo results ================"
	@$(WHALE) cv --work $(DEMO_WORK) --pipeline configs/demo.yaml --folds-file folds/demo.csv 2>/dev/null | tail -1
	@$(WHALE) score submissions/demo.csv $(DEMO_DATA)/solution.csv
	@echo "Submission: submissions/demo.csv"

test: install
	$(VENV)/bin/pytest -q

test-slow: install
	$(VENV)/bin/pytest -q -m slow

# On a CUDA machine: the demo chain on CUDA with AMP, retrieval's flat and IVF index on the GPU against
# the CPU, DDP over NCCL with ArcFace (one process against two; 2+ GPUs), timings. It fails where
# nvidia-smi finds a GPU that torch cannot use; on a machine without one it says what it skipped, exit 0.
gpu-check: install
	$(PYTHON) -m pipeline.diagnostics.gpu_check

# Speed and scale figures against their goals, then MAP@5 end to end on the real sets.
bench: install
	$(PYTHON) -m benchmarks.speed
	$(PYTHON) -m benchmarks.real_data --budget $(or $(BUDGET),1)

# This tree against BASELINE (a commit) and every retrieval option, nyala and lion, one table.
BASELINE ?=
bench-retrieval: install
	$(PYTHON) -m benchmarks.retrieval $(if $(BASELINE),--baseline $(BASELINE))

# The ensemble of configs/ensemble.yaml against the default model at the same BUDGET training minutes
# per fold (5 folds, nyala and lion), and the default model against the pytorch-metric-learning peer.
bench-ensemble: install
	$(PYTHON) -m benchmarks.ensemble --budget $(or $(BUDGET),1) $(if $(SETS),--sets $(SETS) --peer-sets) \
	  $(if $(ENSEMBLE_WORK),--work $(ENSEMBLE_WORK))

# Real humpback flukes: the default recipe at BUDGET minutes per fold (5 folds), the zero-shot start, the
# pytorch-metric-learning recipe from the same ImageNet weights and wildlife-tools' SIFT matcher, one run.
# QUICK=1: humpback_small (minutes); else humpback (hours on 2 cores).
QUICK ?=
bench-humpback: install
	$(PYTHON) -m benchmarks.humpback --budget $(or $(BUDGET),5) $(if $(QUICK),--quick)

# The learned fluke detector on the synthetic set (true boxes known): IoU against the border-colour crop.
bench-boxes: install
	$(PYTHON) -m benchmarks.boxes

# 15 loss recipes (one per family, benchmarks/losses.py RECIPES) on nyala, same backbone, image size and BUDGET minutes per fold (3 folds).
bench-losses: install
	$(PYTHON) -m benchmarks.losses --budget $(or $(BUDGET),0.75)

synth: install
	$(WHALE) synth --out $(DATA)

# Learn a fluke detector from BOXES (a CSV Image,x0,y0,x1,y1 of the photos you boxed), then
# make preprocess SET="preprocess.boxes_model=$(WORK)/boxes/model.pt preprocess.boxes=$(BOXES)".
BOXES ?=
boxes: install
	$(WHALE) boxes train --data $(DATA) $(COMMON) --boxes $(BOXES)

preprocess: install
	$(WHALE) preprocess --data $(DATA) $(COMMON)

folds: install
	$(WHALE) folds $(COMMON) $(FOLDS_ARG)

# NPROC=2 (or more) trains under torchrun with DDP: NCCL on GPUs, gloo on the CPU; NNODES > 1 over machines.
RDZV_ARGS = $(if $(filter 1,$(NNODES)),--standalone,--nnodes=$(NNODES) --rdzv_backend=c10d \
            --rdzv_endpoint=$(RDZV_ENDPOINT) --rdzv_id=$(RDZV_ID))
TORCHRUN = $(VENV)/bin/torchrun $(RDZV_ARGS) --nproc_per_node=$(NPROC) -m pipeline
TRAIN_CMD = $(if $(filter 11,$(NPROC)$(NNODES)),$(WHALE),$(TORCHRUN))

train: install
	$(if $(and $(filter-out 1,$(NNODES)),$(if $(RDZV_ENDPOINT),,missing)),$(error NNODES=$(NNODES) needs RDZV_ENDPOINT=host:port, one of the machines))
	$(TRAIN_CMD) train $(MODEL_ARGS) --folds $(FOLDS) $(if $(BUDGET),--budget $(BUDGET))

embed: install
	$(WHALE) embed $(MODEL_ARGS) --folds $(FOLDS)

knn: install
	$(WHALE) knn $(MODEL_ARGS) --folds $(FOLDS)

# One model's predictions passed through as the ensemble (what `make all` uses).
single: install
	$(WHALE) ensemble $(COMMON) --model $(MODEL) $(FOLDS_ARG)

# Every model in configs/ensemble.yaml: train, embed and knn. BUDGET is the total per fold: the members that
# train the whole network share it (pipeline/ensemble/budget.py); heads and training-free members take none.
train-all: install
	@$(WHALE) ensemble $(COMMON) --list-models $(if $(BUDGET),--budget $(BUDGET)) | while read m b; do \
	  $(MAKE) --no-print-directory train embed knn MODEL=$$m BUDGET=$$([ "$$b" = - ] || echo $$b) || exit 1; done

# The models of configs/ensemble.yaml combined by every method it lists; prints the CV table, then submits.
ensemble: install
	$(WHALE) ensemble $(COMMON) $(FOLDS_ARG)
	$(WHALE) submit $(COMMON) $(FOLDS_ARG) --out $(SUBMISSION)

submit: install
	$(WHALE) submit $(COMMON) $(FOLDS_ARG) --out $(SUBMISSION)

cv: install
	$(WHALE) cv $(COMMON) $(FOLDS_ARG)

all: preprocess folds train embed knn single submit cv

report: install
	$(WHALE) report $(COMMON) $(FOLDS_ARG)

identify: install
	$(WHALE) identify --work $(WORK) $(PHOTOS)

# The identification bundle of WORK (identify --bundle, serve, the catalogue read it).
bundle: install
	$(WHALE) bundle --work $(WORK)

# A catalogue of known individuals (docs/catalogue.md): init from DATA's train set, bound
# to WORK's models; then `whale catalogue add/queue/decide/... --catalogue $(CATALOGUE)`.
CATALOGUE ?= catalogue
catalogue-init: install
	$(WHALE) catalogue init --catalogue $(CATALOGUE) --from $(DATA) --work $(WORK)

catalogue-queue: install
	$(WHALE) catalogue queue --catalogue $(CATALOGUE)

catalogue-evaluate: install
	$(WHALE) catalogue evaluate --catalogue $(CATALOGUE)

# The catalogue on nyala: 320 photos added and decided by a simulated reviewer, latencies, append
# against rebuild, ranks, and the same adds with every gallery padded to 100,000 photos.
bench-catalogue: install
	$(PYTHON) -m benchmarks.catalogue $(if $(WORK_NYALA),--work $(WORK_NYALA)) --budget $(or $(BUDGET),1)
	$(if $(WORK_NYALA),$(PYTHON) -m benchmarks.identify_speed --work $(WORK_NYALA))

# A catalogue of real humpback flukes, zero-shot and trained bundles side by side: `catalogue evaluate` on
# each, and a 500-photo survey folder's import speed (run it on an idle machine). QUICK=1: humpback_small;
# WORK_HUMPBACK= a work folder trained on the same set (else one is trained here); CATALOGUES= keeps the
# catalogues there, and a second run with NO_EVALUATE=1 measures the import speed alone.
catalogue-humpback: install
	$(PYTHON) -m benchmarks.catalogue_humpback $(if $(QUICK),--quick) $(if $(WORK_HUMPBACK),--work $(WORK_HUMPBACK)) \
	  $(if $(CATALOGUES),--root $(CATALOGUES)) $(if $(NO_EVALUATE),--no-evaluate)

# Local matching on nyala and lion (5 folds, the same trained models for every row): none, ratio-test
# counts, RANSAC homography / fundamental inliers, each with and without calibrated fusion; the
# training-free recipe against wildlife-tools' SIFT matcher; descriptor and verification speeds.
bench-local: install
	$(PYTHON) -m benchmarks.local --budget $(or $(BUDGET),1)

# The review screen of a catalogue with CATALOGUE= on the command line, else WORK's identification page;
# on 127.0.0.1 unless BIND= names another address (then every request needs the printed access token).
PORT ?= 8000
serve: install
	$(WHALE) serve $(if $(filter command environment,$(origin CATALOGUE)),--catalogue $(CATALOGUE),--work $(WORK)) \
	  --port $(PORT) $(if $(BIND),--host $(BIND))

clean:
	rm -rf $(WORK)
