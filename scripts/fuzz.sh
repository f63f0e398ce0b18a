#!/usr/bin/env bash
# Long fuzz runs of the model readers and the logits-file reader (`gemma-fit fuzz`, src/fuzz/).
#
#   scripts/fuzz.sh N [MODEL] [OPTIONS...]
#
# MODEL: 'default' (the default GGUF, fetched if needed; the default), a .gguf file, a folder
# with config.json and a *.safetensors file, or 'tiny-gguf' / 'tiny-hf' (the tests' tiny models,
# written to a temporary folder). N structure-aware mutations, 2 workers, each mutating its own
# copy on /dev/shm in place and restoring it; 30% of the cases through `run`, the rest through
# `check` (the header-only path). OPTIONS go to `gemma-fit fuzz` (--seed S, --workers N,
# --run-share F, --memory-factor X, --only CASE to replay one case).
#
# MODEL may also be a logits file (`quality --save-logits`), given with the model that made it
# (and its text, if not the shipped one) in OPTIONS: `--with-model M [--with-text FILE]`; or
# 'tiny-logits': the tests' tiny GGUF model's logits file over a short text (chunks of 16, top 8,
# 2 full rows). Every case then runs `gemma-fit quality --model M --against <the mutated copy>`.
#
# For a GGUF file it first runs the classic case alone: the first tensor name's length one
# byte too long, through `run`, and prints its time, peak memory and message. Ends with the
# outcome counts and the wall time; exits 1 if any case panicked, died of a signal, hung, went
# over twice the clean run's peak memory, or printed a bad message.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:?usage: scripts/fuzz.sh N [MODEL] [OPTIONS...]}
MODEL=${2:-default}
shift $(( $# >= 2 ? 2 : 1 ))

cargo build --release --quiet
BIN=$PWD/target/release/gemma-fit

WITH=()
case "$MODEL" in
  tiny-gguf|tiny-hf|tiny-logits)
    TINY=$(mktemp -d)
    trap 'rm -rf "$TINY"' EXIT
    GEMMA_FIT_TINY_DIR=$TINY cargo test --quiet --test fuzz write_tiny_models -- --ignored >/dev/null
    case "$MODEL" in
      tiny-gguf) MODEL=$TINY/tiny.gguf ;;
      tiny-hf) MODEL=$TINY/tiny-hf ;;
      tiny-logits)
        MODEL=$TINY/tiny.logits
        WITH=(--with-model "$TINY/tiny.gguf" --with-text "$TINY/tiny-text.txt") ;;
    esac ;;
  default) MODEL=$("$BIN" fetch) ;;
esac

# The name-length case is a GGUF one: not for a logits file.
if [ -f "$MODEL" ] && [ "$(head -c 8 "$MODEL" | tr -d '\000')" != GFLOGITS ]; then
  COPY=$(mktemp -p /dev/shm name-length-XXXXXX.gguf 2>/dev/null || mktemp --suffix .gguf)
  cp "$MODEL" "$COPY"
  python3 - "$COPY" <<'PY'
import struct, sys
# Walk the metadata to the first tensor entry and make its name one byte longer.
path = sys.argv[1]
with open(path, 'r+b') as f:
    d = f.read(256 << 20)
    fixed = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    def skip(t, pos):
        if t in fixed:
            return pos + fixed[t]
        if t == 8:
            return pos + 8 + struct.unpack_from('<Q', d, pos)[0]
        et, n = struct.unpack_from('<IQ', d, pos)
        pos += 12
        if et in fixed:
            return pos + n * fixed[et]
        for _ in range(n):
            pos = skip(et, pos)
        return pos
    pos = 24
    for _ in range(struct.unpack_from('<Q', d, 16)[0]):
        pos += 8 + struct.unpack_from('<Q', d, pos)[0]
        pos = skip(struct.unpack_from('<I', d, pos)[0], pos + 4)
    n = struct.unpack_from('<Q', d, pos)[0]
    f.seek(pos)
    f.write(struct.pack('<Q', n + 1))
    print(f"name-length case: tensor name at byte {pos}, length {n} -> {n + 1}")
PY
  TIME=()
  [ -x /usr/bin/time ] && TIME=(/usr/bin/time -f "name-length case: %e s, peak RSS %M KiB")
  "${TIME[@]}" "$BIN" run --model "$COPY" --prompt-tokens 8 --gen 2 2>&1 >/dev/null | sed 's/^/  /' || true
  rm -f "$COPY"
fi

start=$(date +%s)
status=0
"$BIN" fuzz "$MODEL" --cases "$N" "${WITH[@]}" "$@" || status=$?
echo "wall time: $(( $(date +%s) - start )) s"
exit $status
