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

.PHONY: venv demo test lint bench notebooks clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip $(QUIET_PIP)
	# CPU wheel first (local on this project's machines) so the profiler's torch requirement is met
	$(PY) -m pip install -q $(TORCH_CPU) $(QUIET_PIP)
	$(PY) -m pip install -q -e '.[profiler,dev]' $(QUIET_PIP)
	touch $@

demo: venv
	$(VENV)/bin/goodput simulate --config examples/demo.yaml --trace $(DEMO_TRACE) --out results/demo --force

test: venv
	$(PY) -m pytest -q -n 2

lint: venv
	.ci/lint
	.ci/contracts

bench: venv
	$(PY) benchmarks/sim_speed.py

# rebuild every notebook from its builder and execute it in place, so the committed copies carry
# their outputs (NOTEBOOKS="plan.ipynb ..." for some only)
notebooks: venv
	$(PY) notebooks/run_notebooks.py $(NOTEBOOKS)

clean:
	rm -rf $(VENV) results
