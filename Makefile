# One line of intent per target. Override TORCH for a GPU build, e.g.
#   make install TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
PY      ?= python3
VENV    ?= .venv
TORCH   ?= torch==2.13.0
BIN     := $(VENV)/bin
PYTEST_ARGS ?= -m "not slow and not stress"

.PHONY: install test test-slow test-stress test-all lint format train bench bench-net bench-tta bench-startup reproduce reproduce-quick ablate clean

install:            ## create .venv, install the pinned torch, then the package with dev and cluster tools
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev,cluster]"

CPU_KIND := $(BIN)/python -c "import torch; print('torch', torch.__version__, 'CPU capability', torch.backends.cpu.get_cpu_capability())"

test:               ## the test suite (fast tests; `make test-all` adds the slow ones)
	@$(CPU_KIND)
	$(BIN)/pytest -q $(PYTEST_ARGS)

test-slow:          ## only the slow tests (accuracy on real data, shaped links; CI runs them)
	@$(CPU_KIND)
	$(BIN)/pytest -q -m slow

test-stress:        ## repetition loops and full grids (30 four-rank runs under load, resume grid)
	$(BIN)/pytest -q -m stress

test-all:           ## every test, slow ones included
	$(BIN)/pytest -q

lint:               ## ruff lint + format check
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format:             ## apply ruff formatting and safe fixes
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

train:              ## one training run; pass Hydra overrides in ARGS="dataset=synthetic optimizer=adam"
	$(BIN)/apts-train $(ARGS)

bench:              ## benchmarks: figures, not assertions
	$(BIN)/python -m benchmarks.bench $(ARGS)

bench-tta:          ## time to a validation accuracy on the CIFAR-10 subset: APTS, Adam, Local Adam, DiLoCo (~10 min)
	$(BIN)/python -m benchmarks.bench_tta $(ARGS)

bench-startup:      ## where a short run's seconds go: torch import, compose, smoke at N = 1 and 2
	$(BIN)/python -m benchmarks.bench_startup $(ARGS)

bench-net:          ## APTS vs DDP on shaped links in network namespaces (root; skips otherwise)
	$(BIN)/python -m benchmarks.bench_net $(ARGS)

reproduce:          ## the paper's comparisons (MNIST, CIFAR-10; hours on CPU) and the report
	$(BIN)/python scripts/reproduce.py --profile full $(ARGS)

reproduce-quick:    ## the CPU profile (Fashion-MNIST, 10-15 min on 2 cores) and the report
	$(BIN)/python scripts/reproduce.py --profile quick $(ARGS)

ablate:             ## the APTS ablation (Fashion-MNIST, 93 runs, ~35 min on 2 cores) and its report
	$(BIN)/python scripts/reproduce.py --profile ablate $(ARGS)

clean:              ## remove run outputs (keeps outputs/.gitkeep)
	find outputs -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
