#!/usr/bin/env bash
# Predicted vs measured peak memory on this machine: the estimator's check (issue 7).
#
# Runs the default 270M model at 512/2048/8192/32768 positions and synthetic 1B and 4B (Q4_K_M)
# at 512/2048/8192, each with a full 512-token prefill chunk (480 at 512) and 32 decoded tokens,
# the context before the prompt filled synthetically (`run --fill-kv synthetic`); then a 4B bf16
# case and a 4B case with an image, and q8_0/q4_0 KV caches on the default model at 32K and 4B at
# 8K; then batches (issue 22): the default model at a 4K context with 1, 2, 4, 8 and 16 sequences
# of 128-token prompts (the serving suite's shape) and synthetic 1B with 8. Every record goes to
# OUT/results.jsonl and the comparison (`gemma-fit fit --results`) to OUT/check.md.
#
# Usage: scripts/estimator-check.sh [--batch-only] [OUT]
#   (default OUT results/estimator/<cpu>/; ~17 min on 2 cores, --batch-only ~3 min)
# To publish the check, pass OUT=reports/estimator/<cpu> and commit it.
set -euo pipefail
cd "$(dirname "$0")/.."
only_batch=false
if [ "${1:-}" = --batch-only ]; then only_batch=true; shift; fi
cargo build --release --quiet
bin=target/release/gemma-fit
out=${1:-results/estimator/$("$bin" info --json | python3 -c 'import json,sys,re; print(re.sub(r"[^a-z0-9]+","-",json.load(sys.stdin)["host"]["cpu_model"].lower()).strip("-"))')}
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
run() {
  local name=$1; shift
  echo "== $name" >&2
  "$bin" run "$@" --fill-kv synthetic --out "$tmp/$name.json" > /dev/null
}
batches() {
  for b in 1 2 4 8 16; do
    run "270m-4096-b$b" --ctx 4096 --prompt-tokens 128 --gen 32 --kv-dtype f16 --batch "$b"
  done
  run "1b-4096-b8" -m synthetic:1b --quant q4_k_m --ctx 4096 --prompt-tokens 128 --gen 8 --kv-dtype f16 --batch 8
}
if $only_batch; then
  batches
else
for c in 512 2048 8192 32768; do
  p=512; [ "$c" = 512 ] && p=480
  run "270m-$c" --ctx "$c" --prompt-tokens "$p" --gen 32
done
for s in 1b 4b; do
  for c in 512 2048 8192; do
    p=512; [ "$c" = 512 ] && p=480
    run "$s-$c" -m "synthetic:$s" --quant q4_k_m --ctx "$c" --prompt-tokens "$p" --gen 32
  done
done
# Quantized KV caches (issue 21), where the cache type moves the peak most: the default model at
# 32K and synthetic 4B at 8K with q8_0 and q4_0 keys and values, and one K/V pair.
for kv in q8_0 q4_0; do
  run "270m-32768-$kv" --ctx 32768 --prompt-tokens 512 --gen 32 --kv-dtype "$kv"
  run "4b-8192-$kv" -m synthetic:4b --quant q4_k_m --ctx 8192 --prompt-tokens 512 --gen 32 --kv-dtype "$kv"
done
run 270m-8192-q8_0-f16 --ctx 8192 --prompt-tokens 512 --gen 32 --k-dtype q8_0 --v-dtype f16
run 4b-bf16-2048 -m synthetic:4b --quant bf16 --ctx 2048 --prompt-tokens 512 --gen 8
run 4b-image -m synthetic:4b --quant q4_k_m --ctx 1024 --prompt-tokens 64 --gen 4 --image synthetic
batches
fi
for f in "$tmp"/*.json; do python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))))' "$f"; done > "$out/results.jsonl"
{
  echo "# Estimator check: $("$bin" info --json | python3 -c 'import json,sys; i=json.load(sys.stdin); print(i["host"]["cpu_model"])'), $(date -u +%F)"
  echo
  echo "\`scripts/estimator-check.sh\`; release build, $(nproc) threads."
  echo
  "$bin" fit --format md --results "$out/results.jsonl"
} > "$out/check.md"
cat "$out/check.md"
