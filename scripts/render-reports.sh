#!/usr/bin/env bash
# Re-renders the published examples in reports/ from the records committed beside them: every
# reports/<machine>/ that holds a results.jsonl and an index.html gets its fit tables, checks,
# charts, exports and page made anew by `gemma-fit report`. Run it after a change to how reports
# look, and commit what changed. (Users' runs never write here: `bench` and `frontier` write to
# results/<machine>/, which git ignores.)
#
# Usage: scripts/render-reports.sh [BIN]   (default: builds and uses target/release/gemma-fit)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-}
if [ -z "$bin" ]; then
  cargo build --release --locked --quiet
  bin=target/release/gemma-fit
fi
for dir in reports/*/; do
  dir=${dir%/}
  if [ -f "$dir/results.jsonl" ] && [ -f "$dir/index.html" ]; then
    echo "== $dir" >&2
    "$bin" report "$dir/results.jsonl" --out "$dir" > /dev/null
  fi
done
git status --short reports/
