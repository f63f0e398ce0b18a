#!/usr/bin/env bash
# Re-records the memory baseline the test suite gates on (tests/gate.rs,
# peak_memory_holds_against_the_committed_baseline): the same case with the same test-profile
# binary. Run it only when a change is meant to move peak memory, and say so in the commit.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
target/debug/gemma-fit run -m synthetic:270m --quant q8_0 --ctx 4096 --prompt-tokens 256 --gen 4 \
  --fill-kv synthetic --threads 2 --out "$tmp" > /dev/null
python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))))' "$tmp" > tests/data/memory-baseline.jsonl
python3 -c 'import json,sys; r=json.loads(open(sys.argv[1]).read()); print("peak RSS %.1f MiB" % (r["metrics"]["peak_rss_bytes"]/2**20))' tests/data/memory-baseline.jsonl
