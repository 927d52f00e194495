#!/usr/bin/env bash
# Profile the shipped models on this machine's GPU and tar the tables into $OUT.
#   bash profiler/device_profile.sh smoke   # kernel self-check, bandwidth, two models briefly
#   bash profiler/device_profile.sh full    # every TP1 model, then the TP2 70B shards
#   TP1_MODELS=a,b SMALL_MODELS=c bash profiler/device_profile.sh resume  # finish stopped
#                                            profiles (no self-check; TP2_MODELS for 70B shards)
#   TP4_MODELS=llama-3.1-70b,qwen2.5-72b TP8_MODELS=llama-3.1-70b,qwen2.5-72b \
#     bash profiler/device_profile.sh resume  # TP4/TP8 shards: one rank's shard on one GPU
#                                            (the all-reduce comes from the collectives tables)
# Profiles already under profiler/profiles/<this gpu>/ (carried in the working tree) are
# resumed, not redone. The whole script keeps within DEADLINE_S (default 570 s): each stage gets
# the time that is left, and whatever was measured is tarred even if a stage is cut short.
# Fitting happens off the GPU box: goodput profile fit profiler/profiles/<gpu>/<model>/tp<k>
set -u
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
MODE=${1:-full}
DEST=${OUT:-/tmp/out}
ROOT=profiler/profiles
DEADLINE=${DEADLINE_S:-570}
T=${PER_MODEL_S:-60}
mkdir -p "$DEST"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
python3 -c 'import torch, triton; print("torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__)'
if [ "$MODE" != resume ]; then
  python3 -m goodput.profiler.selfcheck > "$DEST/selfcheck.txt" 2>&1
  rc=$?; tail -n 40 "$DEST/selfcheck.txt"; [ $rc = 0 ] || { echo "selfcheck failed"; exit 1; }
fi
prof() {  # prof ARGS... : one stage, limited to the time left before the deadline
  local left=$((DEADLINE - SECONDS))
  [ $left -gt 20 ] || { echo "no time left for: $*"; return; }
  echo "== [$SECONDS s] goodput profile $*"
  timeout "$left" python3 -m goodput.profiler.cli profile "$@" 2>&1 | grep -v -i warning
}
RUN="run --no-fit --no-progress --out $ROOT --budget-s $T"
if [ "$MODE" = resume ]; then
  # SMALL_MODELS get the full-depth check; TP1_MODELS share one process (one Triton compile)
  [ -z "${SMALL_MODELS:-}" ] || prof $RUN --model "$SMALL_MODELS" --validate-full-depth
  [ -z "${TP1_MODELS:-}" ] || prof $RUN --model "$TP1_MODELS"
  [ -z "${TP2_MODELS:-}" ] || prof $RUN --model "$TP2_MODELS" --tp 2
  [ -z "${TP4_MODELS:-}" ] || prof $RUN --model "$TP4_MODELS" --tp 4
  [ -z "${TP8_MODELS:-}" ] || prof $RUN --model "$TP8_MODELS" --tp 8
elif [ "$MODE" = smoke ]; then
  prof bandwidth --out "$ROOT"
  prof $RUN --model tinyllama-1.1b --validate-full-depth
  prof $RUN --model llama-3.1-8b
else
  prof bandwidth --out "$ROOT"
  prof $RUN --model tinyllama-1.1b,llama-3.2-1b --validate-full-depth
  prof $RUN --model llama-3.1-8b,llama-2-7b,mistral-7b,qwen2.5-7b,llama-2-13b,opt-13b
  prof $RUN --model llama-3.1-70b,llama-2-70b --tp 2
fi
echo "== [$SECONDS s] done"
tar czf "$DEST/profiles.tgz" --exclude='*.tmp' -C "$ROOT" .
ls -la "$DEST"
