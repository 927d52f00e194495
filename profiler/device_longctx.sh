#!/usr/bin/env bash
# Profile llama-3.1-8b on this GPU with the fastest attention kernel per batch (Triton paged vs
# torch SDPA backends) and the long-context points, and tar the profile into $OUT.
#   bash profiler/device_longctx.sh                  # fresh profile under $ROOT (/tmp/prof)
#   RESUME=.device_carry/prof bash profiler/device_longctx.sh   # resume a carried partial one
# The SDPA paths are checked against the reference first (goodput.profiler.attention_check). The run
# stops resumably before DEADLINE_S (default 560 s). Fit off the GPU box:
#   goodput profile fit profiler/profiles/h200/llama-3.1-8b/tp1
set -u
export PYTHONUNBUFFERED=1
DEST=${OUT:-/tmp/out}
ROOT=${ROOT:-/tmp/prof}
MODEL=${MODEL:-llama-3.1-8b}
DEADLINE=${DEADLINE_S:-560}
mkdir -p "$DEST" "$ROOT"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
python3 -c 'import torch, triton; print("torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__, "cudnn", torch.backends.cudnn.version())'
[ -n "${RESUME:-}" ] && cp -r "$RESUME"/. "$ROOT"/
timeout 120 python3 -m goodput.profiler.attention_check > "$DEST/attention_check.txt" 2>&1
rc=$?; tail -n 60 "$DEST/attention_check.txt"; [ $rc = 0 ] || { echo "attention check failed"; exit 1; }
left=$((DEADLINE - SECONDS))
echo "== [$SECONDS s] profile run $MODEL ($left s left)"
timeout "$left" python3 -m goodput.profiler.cli profile run --no-fit --no-progress --gpu-name h200 \
  --out "$ROOT" --budget-s $((left - 40)) --model "$MODEL" 2>&1 | grep -v -i warning
left=$((DEADLINE - SECONDS))
if ! grep -q '"status": "complete"' "$ROOT"/h200/"$MODEL"/tp1/provenance.json 2>/dev/null \
   && [ $left -gt 90 ]; then  # a crash (not the budget): resume with the flash backend only
  echo "== [$SECONDS s] resuming with PROFILER_SDPA_BACKENDS=flash ($left s left)"
  PROFILER_SDPA_BACKENDS=flash timeout "$left" python3 -m goodput.profiler.cli profile run --no-fit \
    --no-progress --gpu-name h200 --out "$ROOT" --budget-s $((left - 40)) --model "$MODEL" \
    2>&1 | grep -v -i warning
fi
echo "== [$SECONDS s] done"
tar czf "$DEST/profile.tgz" --exclude='*.tmp' -C "$ROOT" .
ls -la "$DEST"
