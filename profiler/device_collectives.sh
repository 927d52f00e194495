#!/usr/bin/env bash
# Measure this host's collectives captured in CUDA graphs, at every TP degree its GPUs allow, and
# tar the tables into $OUT.
#   bash profiler/device_collectives.sh               # graph sweep at TP2, TP4, TP8 (those <= GPUs)
#   WORLDS=2 bash profiler/device_collectives.sh      # one degree (a 2-GPU machine)
#   EAGER=1 bash profiler/device_collectives.sh       # also the eager tp<N>.csv of each degree
# Steps: (1) GPUs, NCCL and `nvidia-smi topo -m` (topo.txt); (2) a one-GPU capture self-check
# (python3 -m goodput.profiler.collectives_graph, seconds; the script stops if NCCL calls cannot be
# captured); (3) per world W of WORLDS (default 2,4,8; a W above the GPU count is skipped and
# said so) `goodput profile collectives --graph --world W`: all_reduce, all_gather,
# reduce_scatter and send_recv, 1 KiB .. MAX_SIZE (default 256M), each size's calls captured in
# a CUDA graph and replayed between CUDA events, the same calls timed eagerly with their host
# launch cost beside them. send_recv is the pipeline-parallel hand-off: at W=2 one stage
# boundary (ranks 0 -> 1), at W=2k the k concurrent hand-offs of a TP-k stage to the next.
# Writes profiler/profiles/<gpu>/collectives/tp<W>.graph.csv + tp<W>.graph.provenance.json.
# The whole script keeps within DEADLINE_S (default 560 s): each world gets the time left.
# $OUT gets 3 files: collectives.tgz (every table this run wrote, flat, plus topo-x<N>.txt and
# selfcheck.txt), topo.txt and selfcheck.txt. Put the tables back with
#   tar xzf collectives.tgz -C profiler/profiles/<gpu>/collectives/
# DEVICE=cpu runs step 3 with gloo (a dry run of the script: rows say timing eager-cpu);
# PROFILES_ROOT=/tmp/p writes the tables there instead of profiler/profiles.
# NVLink multicast (NVLS) stays off: NCCL_NVLS_ENABLE=0 here and in every worker.
set -u
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
DEST=${OUT:-/tmp/out}
ROOT=${PROFILES_ROOT:-profiler/profiles}  # where the tables are written
DEADLINE=${DEADLINE_S:-560}
DEVICE=${DEVICE:-cuda}
mkdir -p "$DEST"
MARK=$(mktemp)  # tables written after this are this run's
STAGE=$(mktemp -d)
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=index,name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
  nvidia-smi topo -m | sed 's/\x1b\[[0-9;]*m//g' | tee "$DEST/topo.txt"
  NGPU=$(nvidia-smi -L | grep -c '^GPU')
else
  echo "nvidia-smi not found: topology absent" | tee "$DEST/topo.txt"
  NGPU=0
fi
python3 -c 'import torch; n = torch.cuda.nccl.version() if torch.cuda.is_available() else None; print("torch", torch.__version__, "cuda", torch.version.cuda, "gpus", torch.cuda.device_count(), "nccl", n)'
[ "$DEVICE" = cpu ] && NGPU=8  # dry run: gloo processes stand in for GPUs
cp "$DEST/topo.txt" "$STAGE/topo-x$NGPU.txt"
if [ "$DEVICE" = cuda ]; then
  echo "== [$SECONDS s] capture self-check on GPU 0"
  timeout -k 10 120 python3 -m goodput.profiler.collectives_graph > "$DEST/selfcheck.txt" 2>&1
  rc=$?; grep -v -i warning "$DEST/selfcheck.txt" | tail -n 20
  cp "$DEST/selfcheck.txt" "$STAGE/"
  if [ $rc != 0 ]; then
    echo "== self-check failed (rc $rc): NCCL calls could not be captured; no sweep run"
    tar czf "$DEST/collectives.tgz" -C "$STAGE" .
    exit 1
  fi
fi
WORLDS=${WORLDS:-2,4,8}
echo "== $NGPU GPUs; worlds requested: $WORLDS"
sweep() {  # sweep W ARGS... : one `profile collectives` run, limited to the time left
  local left=$((DEADLINE - SECONDS - 15))
  [ $left -gt 30 ] || { echo "== no time left for: $*"; return; }
  echo "== [$SECONDS s] goodput profile collectives --world $* (limit ${left}s)"
  timeout -k 10 "$left" python3 -m goodput.profiler.cli profile collectives --world "$@" --out "$ROOT" \
      --max-size "${MAX_SIZE:-256M}" --device "$DEVICE" 2>&1 | grep -v -i warning
  local rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || { echo "== world $1 exited $rc"; FAIL=1; }
}
FAIL=0
for W in $(echo "$WORLDS" | tr ',' ' '); do
  if [ "$W" -gt "$NGPU" ]; then
    echo "== skip world $W: only $NGPU GPUs here (a TP$W table needs a $W-GPU machine)"
    continue
  fi
  sweep "$W" --graph
  [ "${EAGER:-0}" = 1 ] && sweep "$W"
done
echo "== [$SECONDS s] done"
find "$ROOT" -path '*/collectives/*' -type f -newer "$MARK" \
    \( -name 'tp*.csv' -o -name 'tp*.provenance.json' \) -exec cp {} "$STAGE/" \;
tar czf "$DEST/collectives.tgz" -C "$STAGE" .
ls -la "$DEST" "$STAGE"
for f in "$STAGE"/tp*.csv; do [ -f "$f" ] && { echo "== $f"; cat "$f"; }; done
exit $FAIL  # 0 when every sweep that ran succeeded
