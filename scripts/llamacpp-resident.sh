#!/usr/bin/env bash
# llama.cpp's peak RSS over the settings grid the llama.cpp profile's resident rule is checked on
# (tests/estimate.rs): the default model at n_ctx 8K and 32K, swa_full off and on, f16 caches with
# flash attention off and on and q8_0 with, n_ubatch 256, 512 and 1024 (n_batch 2048, as
# llama.cpp's own default), a 512-token prompt and 8 decoded tokens, 2 threads. Each setting is
# `gemma-fit run --engine llama.cpp` (a child process probed from outside); the records go to OUT
# as JSON lines (default tests/data/llamacpp/resident-270m.jsonl). ~3 minutes on 2 cores.
#
#   scripts/llamacpp-resident.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-tests/data/llamacpp/resident-270m.jsonl}
scripts/install-llamacpp.sh >/dev/null
cargo build --release --quiet
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=0
for ctx in 8192 32768; do for swa in off on; do for kv in f16:off f16:on q8_0:on; do for ub in 256 512 1024; do
  n=$((n + 1))
  args=(--engine llama.cpp --ctx "$ctx" --kv-dtype "${kv%%:*}" --flash-attn "${kv##*:}" --ubatch "$ub"
        --prefill-chunk 2048 --prompt-tokens 512 --gen 8 --threads 2 --out "$tmp/$n.json")
  [ "$swa" = on ] && args+=(--swa-full)
  target/release/gemma-fit run "${args[@]}" >/dev/null
  python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))))' "$tmp/$n.json" >> "$tmp/all.jsonl"
  echo "$n/36 ctx $ctx swa_full $swa kv $kv ubatch $ub" >&2
done; done; done; done
mv "$tmp/all.jsonl" "$OUT"
echo "$OUT"
