#!/usr/bin/env bash
# Serve fidelity cases on this machine's GPU; tar each folder's real_* results into $OUT.
#   bash profiler/serve/device_fidelity.sh profiler/fidelity/h200/llama-3.1-8b [DIR ...]
#   ONLY=sarathi-load30 bash profiler/serve/device_fidelity.sh DIR   # some cases only
#   ATTENTION=flash bash profiler/serve/device_fidelity.sh DIR       # FlashAttention prompts
# Wheels the image lacks (simpy) travel in $WHL (default .whl/; see docs/fidelity.md). Each
# folder gets at most PER_DIR_S seconds (default 290) so one hang cannot eat the whole call.
set -u
export PYTHONUNBUFFERED=1
DEST=${OUT:-/tmp/out}
mkdir -p "$DEST"
WHL=${WHL:-.whl}
if [ -d "$WHL" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHL"/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
for d in "$@"; do
  echo "== [$SECONDS s] $d"
  timeout "${PER_DIR_S:-290}" python3 -m goodput.profiler.serve.cli fidelity run "$d" ${ONLY:+--only "$ONLY"} --attention "${ATTENTION:-triton}" 2>&1 | grep -v -i warning
  name=$(echo "$d" | tr '/' '_')
  (cd "$d" && tar czf "$DEST/$name.tgz" $(ls -d ${ONLY:-*}/real_* 2>/dev/null))
done
echo "== [$SECONDS s] done"; ls -la "$DEST"
