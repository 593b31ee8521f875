# Everyday commands of luce; `make help` lists them. Everything runs in the
# virtual environment $(VENV) that `make setup` makes (README's first command
# without the run; .ci/run makes its own fresh .venv-ci).
#   make setup test lint      install, the test suite as CI runs it, the lint CI runs
#   make bench BENCH=topk_sample BENCH_ARGS='--rounds=3'
#   make docker-cuda IMAGE=registry.example/luce

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Data-backed tests read $LUCE_SHARED_DATA and skip (saying why) without it.
LUCE_SHARED_DATA ?= $(abspath $(CURDIR)/../shared/data)
export LUCE_SHARED_DATA
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# make bench: a quick pl_log_prob run by default (about a minute on 2 cores);
# BENCH=NAME[,NAME...] or BENCH=all runs those with their own defaults, and
# BENCH_ARGS go to each after `--` (luce-bench --list names them).
BENCH ?= quick
BENCH_ARGS ?=
QUICK_BENCH := --bench=pl_log_prob -- --shapes=256x64x16 --rounds=3 --round_seconds=0.1 \
  --out=benchmarks/out/pl_log_prob_quick.json
DOCKER ?= docker
DOCKERFILE := Dockerfile.tpu-gpu
IMAGE ?= luce
DOCKER_BUILD_ARGS ?=
SHELL_SCRIPTS := $(wildcard scripts/launch/*.sh scripts/launch/*.sbatch)

.DEFAULT_GOAL := help
.PHONY: help setup setup-bench test ci lint docs wheel bench bench-list docker-cpu docker-cuda docker-tpu clean

help:  ## list the targets
	@awk 'BEGIN { FS = ":.*## " } /^[a-z][a-z-]*:.*## / { printf "  %-12s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q -e . --no-deps
	touch $@

$(VENV)/.bench-installed: $(VENV)/.installed benchmarks/requirements.txt
	$(PIP) install -q -r benchmarks/requirements.txt
	touch $@

setup: $(VENV)/.installed  ## make .venv: requirements.txt, then luce editable (pip install -e . --no-deps)

setup-bench: $(VENV)/.bench-installed  ## setup, plus the benchmark peers (benchmarks/requirements.txt: PyTorch)

test: $(VENV)/.installed  ## the test suite as .ci/run runs it (pytest -n 2; LUCE_SHARED_DATA defaults to ../shared/data)
	$(PY) -m pytest -q -n 2 --dist loadfile tests

ci:  ## exactly what CI runs, in a fresh .venv-ci (bash .ci/run)
	bash .ci/run

lint: $(VENV)/.installed  ## ruff check, hadolint on the Dockerfile, shellcheck on scripts/launch
	$(VENV)/bin/ruff check lib kernels launchers configs benchmarks tests setup.py
	$(VENV)/bin/hadolint --config .hadolint.yaml $(DOCKERFILE)
	@if [ -x $(VENV)/bin/shellcheck ]; then set -x; $(VENV)/bin/shellcheck $(SHELL_SCRIPTS); \
	else echo "shellcheck not installed (no wheel for this platform): launch scripts not linted"; fi

docs: $(VENV)/.installed  ## the documentation (docs/requirements.txt into the venv, then docs/build.sh)
	$(PIP) install -q -r docs/requirements.txt
	PATH="$(abspath $(VENV))/bin:$$PATH" bash docs/build.sh

wheel: $(VENV)/.installed  ## sdist and wheel (native kernels prebuilt per x86-64 level) in dist/, manylinux-tagged in dist/wheelhouse
	rm -rf dist
	$(PY) -m build --outdir dist .
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/auditwheel repair -w dist/wheelhouse dist/*.whl

bench: $(VENV)/.bench-installed  ## benchmarks: a quick pl_log_prob, or BENCH=NAME[,...] [BENCH_ARGS=...]
ifeq ($(BENCH),quick)
	$(VENV)/bin/luce-bench $(QUICK_BENCH)
else
	$(VENV)/bin/luce-bench --bench=$(BENCH) $(if $(strip $(BENCH_ARGS)),-- $(BENCH_ARGS))
endif

bench-list: $(VENV)/.installed  ## the benchmark names (luce-bench --list)
	$(VENV)/bin/luce-bench --list

docker-cpu:  ## build the CPU image, IMAGE:cpu (IMAGE=luce; JAX's CPU wheel)
	$(DOCKER) build -f $(DOCKERFILE) --build-arg JAX_TARGET=cpu $(DOCKER_BUILD_ARGS) -t $(IMAGE):cpu .

docker-cuda:  ## build the CUDA image, IMAGE:cuda (jax[cuda12]; docker run --gpus all)
	$(DOCKER) build -f $(DOCKERFILE) --build-arg JAX_TARGET=cuda $(DOCKER_BUILD_ARGS) -t $(IMAGE):cuda .

docker-tpu:  ## build the TPU image, IMAGE:tpu (jax[tpu], for a Cloud TPU VM)
	$(DOCKER) build -f $(DOCKERFILE) --build-arg JAX_TARGET=tpu $(DOCKER_BUILD_ARGS) -t $(IMAGE):tpu .

clean:  ## remove build outputs and caches (never .venv, data or runs)
	rm -rf build dist kernels/_prebuilt *.egg-info .pytest_cache .ruff_cache .jax-cache-ci .coverage .coverage.* htmlcov \
	  docs/_build benchmarks/out
	find lib kernels launchers configs benchmarks tests scripts -name __pycache__ -type d -prune \
	  -exec rm -rf {} +
