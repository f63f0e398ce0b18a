#!/usr/bin/env bash
# Peer comparison: gemma-fit vs llama.cpp (llama-cpp-python) on the same GGUF, same threads.
#
#   scripts/peer-llamacpp.sh [--model FILE] [--threads N] [--reps R] [--out FILE]
#
# Installs llama-cpp-python (scripts/install-llamacpp.sh: compiled locally, ~15 min on 2 cores,
# once, under $GEMMA_FIT_HOME/peer/), builds gemma-fit --release, then runs the two engines
# alternately, one fresh process per measurement, R times each:
#   prefill-128 + decode-64 (decode speed and peak RSS after a 128-token prompt),
#   prefill-512, prefill-2048 + decode-64 (peak RSS with a long prompt).
# Prints medians and gemma-fit / llama.cpp ratios; writes every sample as JSON to --out.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=default THREADS=2 REPS=5 OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --model) MODEL=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

PYTHON=$(scripts/install-llamacpp.sh)

cargo build --release --quiet
BIN=target/release/gemma-fit
if [ "$MODEL" = default ]; then MODEL=$($BIN fetch); fi
[ -f "$MODEL" ] || { echo "model not found: $MODEL" >&2; exit 2; }

samples=$(mktemp)
trap 'rm -f "$samples"' EXIT
measure() { # engine prompt gen
  local engine=$1 p=$2 g=$3 line
  if [ "$engine" = llama.cpp ]; then
    line=$("$PYTHON" scripts/llamacpp_bench.py --model "$MODEL" --threads "$THREADS" --prompt-tokens "$p" --gen "$g")
  else
    # The run's record (schema v1), flattened to the fields llamacpp_bench.py prints.
    line=$($BIN run --model "$MODEL" --threads "$THREADS" --prompt-tokens "$p" --gen "$g" --json | python3 -c '
import json, sys
r = json.load(sys.stdin)
m = r["metrics"]
print(json.dumps({"engine": "gemma-fit", "load_s": m["load_s"], "prompt_tokens": r["key"]["prompt_tokens"],
                  "prefill_tok_per_s": m["prefill_tok_per_s"]["median"], "decode_tok_per_s": m["decode_tok_per_s"]["median"],
                  "peak_rss_bytes": m["peak_rss_bytes"]}))')
  fi
  echo "$line" | python3 -c "import json,sys; d=json.load(sys.stdin); d['case']='$p+$g'; print(json.dumps(d))" >> "$samples"
  echo "  $engine $p+$g done" >&2
}

for r in $(seq 1 "$REPS"); do
  echo "repetition $r/$REPS" >&2
  for c in "128 64" "512 0" "2048 64"; do
    # Alternate which engine goes first, so drift (thermal, background load) hits both alike.
    if [ $((r % 2)) -eq 1 ]; then measure llama.cpp $c; measure gemma-fit $c
    else measure gemma-fit $c; measure llama.cpp $c; fi
  done
done

[ -n "$OUT" ] && cp "$samples" "$OUT"
python3 - "$samples" "$THREADS" "$MODEL" <<'PY'
import json, statistics, sys, platform
rows = [json.loads(l) for l in open(sys.argv[1])]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
def med(engine, case, key):
    v = [r[key] for r in rows if r["engine"] == engine and r["case"] == case]
    return statistics.median(v) if v else float("nan")
print(f"model {sys.argv[3]}\nmachine: {cpu}, {sys.argv[2]} threads; medians of {len(rows)//6} alternating runs\n")
print("| metric | llama.cpp | gemma-fit | gemma-fit / llama.cpp |")
print("|---|---:|---:|---:|")
for label, case, key, scale, fmt, better in [
    ("prefill-128 tok/s", "128+64", "prefill_tok_per_s", 1, "{:.1f}", "higher"),
    ("prefill-512 tok/s", "512+0", "prefill_tok_per_s", 1, "{:.1f}", "higher"),
    ("prefill-2048 tok/s", "2048+64", "prefill_tok_per_s", 1, "{:.1f}", "higher"),
    ("decode tok/s after 128", "128+64", "decode_tok_per_s", 1, "{:.1f}", "higher"),
    ("decode tok/s after 2048", "2048+64", "decode_tok_per_s", 1, "{:.1f}", "higher"),
    ("load s", "128+64", "load_s", 1, "{:.2f}", "lower"),
    ("peak RSS MiB, 128+64", "128+64", "peak_rss_bytes", 2**20, "{:.0f}", "lower"),
    ("peak RSS MiB, 2048+64", "2048+64", "peak_rss_bytes", 2**20, "{:.0f}", "lower"),
]:
    a, b = med("llama.cpp", case, key) / scale, med("gemma-fit", case, key) / scale
    print(f"| {label} ({better} is better) | {fmt.format(a)} | {fmt.format(b)} | {b/a:.2f}× |")
PY
