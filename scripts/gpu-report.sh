#!/usr/bin/env bash
# The one-shot GPU hardware report: everything issue 10 asks of a lent GPU machine, in one run
# that needs no network and no model download (synthetic weights only).
#
#   scripts/gpu-report.sh [--bin PATH] [--device cuda:0] [--out DIR] [--budget SECONDS]
#
# In order of importance, each step cut off when the time budget (default 450 s) runs out, and
# every finished case kept (results are appended as each case ends):
#   1. memory bandwidth (device-to-device copy)                  -> OUT/bandwidth.json
#   2. the matrix: synthetic 270M/1B/4B/12B/27B x bf16/q8_0/q4_k_m at 4K/32K/128K, the KV cache
#      filled synthetically, NVML probing                         -> OUT/results.jsonl
#   3. the fit frontier under ballast standing in for 24, 16 and 48 GB cards (RTX 4090, RTX 4080,
#      L40S totals), then on the card itself                       -> OUT/frontier-*.json
#   4. the report: fit tables, charts, estimator error, % of the bandwidth limit -> OUT/report/
# With --device cpu it runs a small version of the same steps on the host (the script's test).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=target/release/gemma-fit DEVICE=cuda:0 OUT="" BUDGET=450
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --budget) BUDGET=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
[ -x "$BIN" ] || { echo "no gemma-fit binary at $BIN (--bin PATH)" >&2; exit 2; }
OUT=${OUT:-results/gpu-run-$(date +%Y%m%d-%H%M%S)}  # publish with --out reports/<gpu>
mkdir -p "$OUT"
start=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - start) )); }
log() { printf '[%4ss] %s\n' "$(( $(date +%s) - start ))" "$*" | tee -a "$OUT/run.log" >&2; }
# Runs a step under the time left; a step cut short is logged, and the script goes on.
step() {
  local name=$1; shift
  local t; t=$(left)
  if [ "$t" -le 5 ]; then log "SKIPPED $name: time budget spent"; return 0; fi
  log "start $name (${t}s left)"
  if timeout --kill-after=10 "$t" "$@"; then log "done $name"; else log "CUT $name (exit $?)"; fi
}

if [ "$DEVICE" = cpu ]; then
  # The script's own test on a CPU-only machine: the same steps, small.
  MODELS='"synthetic:270m"'; QUANTS='"q8_0", "q4_k_m"'; CONTEXTS='1024, 4096'
  PROMPT=64; GEN=8; BW_SIZE=256MiB
  FRONTIER_MODELS=(-m synthetic:270m); FRONTIER_QUANTS=(--quant q8_0)
  LIMITS=(345MiB); FRONTIER_MAX=(--max-ctx 32768); STEP=1024
else
  MODELS='"synthetic:270m", "synthetic:1b", "synthetic:4b", "synthetic:12b", "synthetic:27b"'
  QUANTS='"bf16", "q8_0", "q4_k_m"'; CONTEXTS='4096, 32768, 131072'
  PROMPT=512; GEN=32; BW_SIZE=4GiB
  FRONTIER_MODELS=(-m synthetic:4b -m synthetic:12b -m synthetic:27b)
  FRONTIER_QUANTS=(--quant bf16 --quant q8_0 --quant q4_k_m)
  # Driver-reported totals of an RTX 4090, RTX 4080 and L40S (`gemma-fit gpus`).
  LIMITS=(24564MiB 16376MiB 46068MiB); FRONTIER_MAX=(); STEP=4096
fi

cat > "$OUT/suite.toml" <<EOF
# Written by scripts/gpu-report.sh.
name = "gpu-report"
description = "Every size x bf16/q8_0/q4_k_m x 4K/32K/128K on $DEVICE, KV cache filled synthetically"
repeats = 2
warmup = 1
timeout_s = 180
device = "$DEVICE"

[axes]
models = [$MODELS]
quants = [$QUANTS]
kv_dtypes = ["bf16"]
contexts = [$CONTEXTS]
prompt_tokens = [$PROMPT]
gen_tokens = [$GEN]
fill_kv = ["synthetic"]

# 270M and 1B stop at 32K positions.
[[exclude]]
model = "synthetic:270m"
context = 131072
[[exclude]]
model = "synthetic:1b"
context = 131072
EOF

# The CUDA build needs libcudart/libcublas/libcurand 13 at run time; on the lent GPU machines they
# come from the PyTorch environment's nvidia.cu13 package (the driver supplies libcuda.so.1).
if [ "$DEVICE" != cpu ]; then
  cu13=$(python3 -c 'import os, nvidia.cu13 as m; print(os.path.join(list(m.__path__)[0], "lib"))' 2>/dev/null || true)
  if [ -n "$cu13" ]; then export LD_LIBRARY_PATH="$cu13${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; fi
fi
log "gemma-fit: $("$BIN" --version), device $DEVICE, budget ${BUDGET}s, out $OUT"
if command -v nvidia-smi > /dev/null; then nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true; fi
"$BIN" info --json > "$OUT/info.json" 2>> "$OUT/run.log" || true

step bandwidth sh -c "\"$BIN\" bandwidth --device $DEVICE --size $BW_SIZE --repeats 10 --json > \"$OUT/bandwidth.json\""
step matrix "$BIN" bench "$OUT/suite.toml" --out "$OUT/results.jsonl" --resume

frontier() { # label, extra args...
  local label=$1; shift
  step "frontier $label" sh -c "\"\$0\" frontier \"\$@\" > \"$OUT/frontier-$label.json\"" "$BIN" \
    "${FRONTIER_MODELS[@]}" "${FRONTIER_QUANTS[@]}" --kv-dtype bf16 --device "$DEVICE" \
    --step "$STEP" "${FRONTIER_MAX[@]}" --prompt-tokens "$PROMPT" --gen 4 --timeout 180 \
    --out "$OUT/results.jsonl" --json "$@"
}
for l in "${LIMITS[@]}"; do frontier "$l" --memory-limit "$l"; done
if [ "$DEVICE" != cpu ]; then frontier card; fi

# The report always runs, over whatever finished (it picks up bandwidth.json beside the results).
BUDGET=$(( BUDGET + 60 ))
step report "$BIN" report "$OUT/results.jsonl" --out "$OUT/report"
log "finished: $OUT"
