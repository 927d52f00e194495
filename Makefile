# The two commands of the README: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_CPU := torch==2.13.0
# the demo replays the real Azure conversation trace when ../shared/traces has it, else a shipped sample
AZURE_CONV := ../shared/traces/AzureLLMInferenceTrace_conv.csv
DEMO_TRACE := $(if $(wildcard $(AZURE_CONV)),$(AZURE_CONV),traces/sample_chat.csv)

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
# this machine's pip config names local wheel folders that may not exist: drop those warnings only
QUIET_PIP := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: venv dev demo test lint bench compiled bench-compiled notebooks clean

# `venv`: what simulating and planning need, nothing more (no torch, no ray): `make demo` uses it.
# `dev`: adds the profiler's torch (the CPU wheel, pinned first so no CUDA build is pulled) and the
# test/lint tools, Ray and Jupyter: `make test` and the other targets use it.
venv: $(VENV)/.installed
dev: $(VENV)/.dev-installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip $(QUIET_PIP)
	# the distribution was renamed goodput-serving: drop an older venv's 'goodput' install
	$(PY) -m pip uninstall -y -q goodput 2>/dev/null || true
	$(PY) -m pip install -q -e . $(QUIET_PIP)
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed
	# CPU wheel first (local on this project's machines) so the profiler's torch requirement is met
	$(PY) -m pip install -q $(TORCH_CPU) $(QUIET_PIP)
	$(PY) -m pip install -q -e '.[profiler,dev]' $(QUIET_PIP)
	touch $@

demo: venv
	$(VENV)/bin/goodput simulate --config examples/demo.yaml --trace $(DEMO_TRACE) --out results/demo --force

test: dev
	$(PY) -m pytest -q -n 2

lint: dev
	.ci/lint
	.ci/contracts

bench: venv
	$(PY) benchmarks/sim_speed.py

# `compiled`: an optional second install, .venv-compiled, with the engine's hot modules compiled
# to C by mypyc ([tool.goodput] compiled in pyproject.toml; needs a C compiler). Not editable:
# compiled modules shadow their source, so they must not sit in the working tree. Rebuild after
# editing the engine; the check refuses a stale build and compares results byte for byte.
CVENV ?= .venv-compiled
CPY := $(CVENV)/bin/python
compiled: dev
	rm -rf $(CVENV) build
	$(PYTHON) -m venv $(CVENV)
	$(CPY) -m pip install -q --upgrade pip $(QUIET_PIP)
	# mypyc type-checks what it compiles: the dev venv's mypy and stubs, then the dependencies
	$(CPY) -m pip install -q "setuptools>=68" wheel \
		$$($(PY) -m pip freeze | grep -iE '^(mypy|pandas-stubs|types-pyyaml|types-tqdm)==') $(QUIET_PIP)
	$(CPY) -m pip install -q . $(QUIET_PIP)
	GOODPUT_COMPILE=1 $(CPY) -m pip install -q --no-build-isolation --no-deps --force-reinstall . $(QUIET_PIP)
	rm -rf build
	$(PY) benchmarks/compiled_check.py --python $(CPY)

bench-compiled: compiled
	$(PY) benchmarks/sim_speed.py --python $(CPY)

# rebuild every notebook from its builder and execute it in place, so the committed copies carry
# their outputs (NOTEBOOKS="plan.ipynb ..." for some only)
notebooks: dev
	$(PY) notebooks/run_notebooks.py $(NOTEBOOKS)

clean:
	rm -rf $(VENV) $(CVENV) results
