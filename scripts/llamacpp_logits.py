#!/usr/bin/env python3
"""A reference logits file from llama.cpp (llama-cpp-python), for `gemma-fit quality --against`.

    $GEMMA_FIT_HOME/peer/llamacpp-venv/bin/python scripts/llamacpp_logits.py \\
        --model MODEL.gguf --ctx 2048 --out tests/data/llamacpp/default-ctx2048.logits

Evaluates the text as llama-perplexity does (and as `gemma-fit quality` does): tokenized once
with BOS first (special tokens not parsed), cut into consecutive chunks of --ctx tokens, each
chunk a fresh sequence with its first token replaced by BOS, offsets ctx/2 .. ctx-2 scored, each
predicting the next token. Writes the gemma-fit logits file format (docs/quality.md): per scored
position the top-K log-probabilities, the next token's id and log-probability and the
log-sum-exp; --full-rows N adds full log-probability rows for the first N positions (1 MiB
each). Default text: the one gemma-fit ships (src/quality/eval-text.txt). scripts/install-llamacpp.sh
installs the virtual environment.

A quantized cache (--kv q8_0 …) is Hadamard-rotated by this llama.cpp, as by gemma-fit
(docs/kv-cache.md); --no-rotation turns that off (llama.cpp's LLAMA_ATTN_ROT_DISABLE=1) and says
so in the file's producer.
"""
import argparse
import hashlib
import json
import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_TEXT = os.path.join(HERE, "..", "src", "quality", "eval-text.txt")
# ggml's type ids (ggml.h). llama.cpp needs flash attention for a quantized V cache, so a block
# type turns it on (an f32/f16 cache runs without, as llama-perplexity's default did).
KV_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8}


def log_softmax(row):
    row = row.astype(np.float64)
    m = row.max()
    lse = m + np.log(np.exp(row - m).sum())
    return row - lse, lse


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--text", default=DEFAULT_TEXT)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=0, help="at most this many chunks (0: all)")
    ap.add_argument("--top-k", type=int, default=64)
    ap.add_argument("--full-rows", type=int, default=0)
    ap.add_argument("--kv", default="f16", choices=sorted(KV_TYPES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-rotation", action="store_true",
                    help="no Hadamard rotation of a quantized cache (LLAMA_ATTN_ROT_DISABLE=1)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    if a.no_rotation:
        os.environ["LLAMA_ATTN_ROT_DISABLE"] = "1"  # read when the cache is made
    from llama_cpp import Llama, __version__ as LLAMA_CPP_PYTHON_VERSION

    raw = open(a.text, "rb").read()
    text_name = "default" if os.path.abspath(a.text) == os.path.abspath(DEFAULT_TEXT) else os.path.basename(a.text)
    llm = Llama(model_path=a.model, n_ctx=a.ctx, n_batch=min(a.ctx, 512), n_threads=a.threads,
                logits_all=True, type_k=KV_TYPES[a.kv], type_v=KV_TYPES[a.kv],
                flash_attn=a.kv not in ("f32", "f16"), verbose=False)
    tokens = llm.tokenize(raw, add_bos=True, special=False)
    n_chunks = len(tokens) // a.ctx
    if a.chunks:
        n_chunks = min(n_chunks, a.chunks)
    if n_chunks == 0:
        sys.exit(f"error: the text has {len(tokens)} tokens, fewer than one chunk of {a.ctx}")
    n_vocab = llm.n_vocab()
    meta = llm.metadata
    shape = {"vocab": n_vocab, "layers": int(meta["gemma3.block_count"]),
             "hidden": int(meta["gemma3.embedding_length"])}
    first, last = a.ctx // 2, a.ctx - 2
    per_chunk = last - first + 1
    positions = n_chunks * per_chunk
    full_rows = min(a.full_rows, positions)
    records, full = [], []
    bos = llm.token_bos()
    for c in range(n_chunks):
        chunk = list(tokens[c * a.ctx:(c + 1) * a.ctx])
        chunk[0] = bos
        llm.reset()
        llm.eval(chunk)
        scores = llm.scores
        for j in range(first, last + 1):
            lp, lse = log_softmax(scores[j])
            target = chunk[j + 1]
            top = np.argpartition(-lp, a.top_k - 1)[:a.top_k]
            top = top[np.lexsort((top, -lp[top]))]
            records.append((target, float(lp[target]), float(lse), top.astype(np.uint32), lp[top].astype(np.float32)))
            if len(full) < full_rows:
                full.append(lp.astype(np.float32))
        print(f"chunk {c + 1}/{n_chunks}", file=sys.stderr, flush=True)
    header = {
        "producer": f"llama.cpp (llama-cpp-python {LLAMA_CPP_PYTHON_VERSION})"
                    + (", KV rotation off" if a.no_rotation else ""),
        "model": os.path.basename(a.model),
        "shape": shape,
        "kv": a.kv,
        "text": text_name,
        "text_sha256": hashlib.sha256(raw).hexdigest(),
        "ctx": a.ctx,
        "top_k": a.top_k,
        "n_tokens": n_chunks * a.ctx,
        "positions": positions,
        "full_rows": full_rows,
    }
    blob = json.dumps(header).encode()
    tmp = a.out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(b"GFLOGITS" + struct.pack("<II", 1, len(blob)) + blob)
        f.write(np.asarray(tokens[:n_chunks * a.ctx], dtype="<u4").tobytes())
        for target, tlp, lse, ids, lps in records:
            f.write(struct.pack("<Iff", target, tlp, lse))
            f.write(ids.astype("<u4").tobytes())
            f.write(lps.astype("<f4").tobytes())
        for row in full:
            f.write(row.astype("<f4").tobytes())
    os.replace(tmp, a.out)
    print(f"{positions} positions from {n_chunks} chunks of {a.ctx} -> {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
