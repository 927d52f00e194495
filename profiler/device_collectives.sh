#!/usr/bin/env bash
# Measure the tensor-parallel collectives of this host's GPUs and copy the tables into $OUT.
#   WORLDS=2 bash profiler/device_collectives.sh          # a 2-GPU machine (the default)
#   WORLDS=2,4,8 bash profiler/device_collectives.sh      # an 8-GPU machine: TP2, TP4 and TP8
# Each world size in WORLDS that does not exceed the GPU count runs `goodput profile collectives`
# (all-reduce, all-gather, send/recv; 1 KiB .. MAX_SIZE, default 256M) and writes
# profiler/profiles/<gpu>/collectives/tp<N>.csv + tp<N>.provenance.json; those files are copied
# flat into $OUT (tp<N>.csv, tp<N>.provenance.json; at most 6 files) together with topo.txt.
# The whole script keeps within DEADLINE_S (default 230 s): each world gets the time left.
# DEVICE=cpu runs the same steps with gloo (a dry run of the script; nvidia-smi still needed).
# NVLink multicast (NVLS) stays off: NCCL_NVLS_ENABLE=0 here and in every worker.
# Put the files back with: cp tp*.csv tp*.provenance.json profiler/profiles/<gpu>/collectives/
set -u
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
DEST=${OUT:-/tmp/out}
ROOT=profiler/profiles
DEADLINE=${DEADLINE_S:-230}
mkdir -p "$DEST"
MARK=$(mktemp)  # tables written after this are this run's
nvidia-smi --query-gpu=index,name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
nvidia-smi topo -m | tee "$DEST/topo.txt"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "gpus", torch.cuda.device_count(), "nccl", torch.cuda.nccl.version())'
NGPU=$(nvidia-smi -L | grep -c '^GPU')
echo "== $NGPU GPUs; worlds requested: ${WORLDS:-2}"
for W in $(echo "${WORLDS:-2}" | tr ',' ' '); do
  if [ "$W" -gt "$NGPU" ]; then
    echo "== skip world $W: only $NGPU GPUs here (a TP$W table needs a $W-GPU machine)"
    continue
  fi
  left=$((DEADLINE - SECONDS))
  [ $left -gt 30 ] || { echo "== no time left for world $W"; continue; }
  echo "== [$SECONDS s] goodput profile collectives --world $W (limit ${left}s)"
  timeout -k 10 "$left" python3 -m profiler.cli profile collectives --world "$W" \
      --out "$ROOT" --max-size "${MAX_SIZE:-256M}" --device "${DEVICE:-cuda}" 2>&1 | grep -v -i warning
done
echo "== [$SECONDS s] done"
find "$ROOT" -path '*/collectives/*' -type f -newer "$MARK" \
    \( -name 'tp*.csv' -o -name 'tp*.provenance.json' \) -exec cp {} "$DEST/" \;
ls -la "$DEST"
for f in "$DEST"/tp*.csv; do [ -f "$f" ] && { echo "== $f"; cat "$f"; }; done
