# The two commands of the README: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_CPU := torch==2.13.0
# the demo replays the real Azure conversation trace when ../shared/traces has it, else a shipped sample
AZURE_CONV := ../shared/traces/AzureLLMInferenceTrace_conv.csv
DEMO_TRACE := $(if $(wildcard $(AZURE_CONV)),$(AZURE_CONV),traces/sample_chat.csv)

.PHONY: venv demo test bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU wheel first (local on this project's machines) so the profiler's torch requirement is met
	$(PY) -m pip install -q $(TORCH_CPU)
	$(PY) -m pip install -q -e '.[profiler,dev]'
	touch $@

demo: venv
	$(VENV)/bin/goodput simulate --config examples/demo.yaml --trace $(DEMO_TRACE) --out results/demo

test: venv
	$(PY) -m pytest -q -n 2

bench: venv
	$(PY) benchmarks/sim_speed.py

clean:
	rm -rf $(VENV) results
