#!/usr/bin/env bash
# Issue 16 on one H200: the FP8 kernel check, Sarathi-Serve's dense mixed-batch points added to
# the profiles the fidelity runs use, and FP8 profiles of Llama-3.1-8B; tars what changed into $OUT.
#   bash profiler/device_fp8.sh                 # check, Sarathi points, then FP8 profiles
#   STAGES=fp8 bash profiler/device_fp8.sh      # resume the FP8 profiles only (carried in the tree)
# Profiles under profiler/profiles/h200/ in the working tree are resumed in place. The Triton-era
# profiles get only the new 'sarathi' points, timed as they were (--attention triton); the
# h200-fastattn one with the fastest kernel per shape, as it was. FP8 profiles time attention with
# the Triton kernel (SDPA reads no e4m3 cache, and the shipped 16-bit H200 profiles, which they are
# compared with, are Triton-timed). Everything stops before DEADLINE_S (default 570 s); what was
# measured is tarred even when a stage is cut short (rerun to resume). Fit off the GPU box:
#   goodput profile fit profiler/profiles/h200/llama-3.1-8b-fp8/tp1
set -u
export PYTHONUNBUFFERED=1
DEST=${OUT:-/tmp/out}
DEADLINE=${DEADLINE_S:-570}
STAGES=${STAGES:-check,sarathi,fp8}
FP8_MODELS=${FP8_MODELS:-llama-3.1-8b-fp8-kvfp8,llama-3.1-8b-fp8,llama-3.1-8b-kvfp8}
SARATHI_MODELS=${SARATHI_MODELS:-llama-3.1-8b,qwen2.5-7b,llama-2-7b}
mkdir -p "$DEST" /tmp/pfast/h200
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
python3 -c 'import torch, triton; print("torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__)'
prof() {  # prof ARGS... : one stage, limited to the time left before the deadline
  local left=$((DEADLINE - SECONDS))
  [ $left -gt 30 ] || { echo "no time left for: $*"; return; }
  echo "== [$SECONDS s] goodput profile $*"
  timeout "$left" python3 -m goodput.profiler.cli profile "$@" --budget-s $((left - 20)) 2>&1 \
    | grep -v -i warning
}
fp8_ok=1
if [[ $STAGES == *check* ]]; then
  timeout 240 python3 -m goodput.profiler.fp8_check > "$DEST/fp8_check.txt" 2>&1
  rc=$?; tail -n 40 "$DEST/fp8_check.txt"; [ $rc = 0 ] || { echo "fp8 check failed: no FP8 profiles"; fp8_ok=0; }
fi
if [[ $STAGES == *sarathi* ]]; then
  prof run --no-fit --no-progress --gpu-name h200 --out profiler/profiles --attention triton \
    --only sarathi --model "$SARATHI_MODELS"
  cp -r profiler/profiles/h200-fastattn/llama-3.1-8b /tmp/pfast/h200/
  prof run --no-fit --no-progress --gpu-name h200 --out /tmp/pfast --only sarathi --model llama-3.1-8b
  rm -rf profiler/profiles/h200-fastattn/llama-3.1-8b && cp -r /tmp/pfast/h200/llama-3.1-8b profiler/profiles/h200-fastattn/
fi
if [[ $STAGES == *fp8* ]] && [ $fp8_ok = 1 ]; then
  prof run --no-fit --no-progress --gpu-name h200 --out profiler/profiles --attention triton \
    --model "$FP8_MODELS"
fi
echo "== [$SECONDS s] done"
dirs=()
for m in ${SARATHI_MODELS//,/ } ${FP8_MODELS//,/ }; do
  [ -d profiler/profiles/h200/$m ] && dirs+=(h200/$m)
done
dirs+=(h200-fastattn/llama-3.1-8b)
tar czf "$DEST/profiles.tgz" --exclude='*.tmp' -C profiler/profiles "${dirs[@]}"
ls -la "$DEST"
