#!/usr/bin/env sh
# Regenerate the sample traces in traces/ with the project's own generator (deterministic seeds).
# Usage, from anywhere:  traces/make_samples.sh      (PYTHON=... to pick an interpreter)
set -eu
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
gen() { "$PYTHON" -m goodput.sim.workload.cli trace generate --float-format %.6f "$@"; }

# Chat-like (cf. Azure conv: prompt mean ~1.2k, output mean ~210), Poisson at 4 req/s.
gen --n 500 --rate 4 --seed 1 \
    --prompt "lognormal:mean=1100,std=1000,min=4,max=8192" \
    --output "lognormal:mean=220,std=150,min=1,max=2048" -o traces/sample_chat.csv

# Code-completion-like (cf. Azure code: long prompts, short outputs), bursty: gamma CV 3.
gen --n 500 --rate 4 --seed 2 --arrival gamma --cv 3 \
    --prompt "lognormal:mean=2000,std=1800,min=4,max=8192" \
    --output "lognormal:mean=30,std=50,min=1,max=1024" -o traces/sample_bursty.csv

# Tiny and hand-checkable: 20 requests, 512-token prompts, 128-token outputs, 2 req/s.
gen --n 20 --rate 2 --seed 3 --prompt fixed:512 --output fixed:128 -o traces/sample_tiny.csv
