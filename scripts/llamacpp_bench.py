#!/usr/bin/env python3
"""One llama.cpp measurement (llama-cpp-python), printed as one JSON line.

Same case shape as `gemma-fit run`: a prompt of N tokens (BOS first) taken from a fixed English
text, prefilled in batches of 512, then G tokens decoded greedily one at a time, each step timed.
Run in a fresh process per case so that peak RSS belongs to that case alone.
"""
import argparse
import json
import resource
import statistics
import sys
import time

import numpy as np
from llama_cpp import Llama

# Keep in sync with FILLER in src/measure.rs: both engines then see the same token ids.
FILLER = (
    "The river ran past the old mill, where the miller kept his ledgers of grain and "
    "flour. Every spring the water rose, and the village gathered to watch the wheel turn faster. "
    "Children counted the boats that drifted down from the hills, and the baker sold warm bread at "
    "the bridge. In the evening the lamps were lit along the towpath, and travellers told stories "
    "of the cities beyond the forest, of markets and bells and libraries full of maps. "
)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--batch", type=int, default=512)
    a = ap.parse_args()

    t0 = time.perf_counter()
    llm = Llama(
        model_path=a.model,
        n_ctx=a.prompt_tokens + a.gen,
        n_batch=a.batch,
        n_ubatch=a.batch,
        n_threads=a.threads,
        n_threads_batch=a.threads,
        logits_all=False,
        verbose=False,
    )
    load_s = time.perf_counter() - t0
    text = FILLER
    while True:
        ids = llm.tokenize(text.encode(), add_bos=True, special=False)
        if len(ids) >= a.prompt_tokens:
            ids = ids[: a.prompt_tokens]
            break
        text += FILLER
    n_vocab = llm.n_vocab()

    def last_logits():
        return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))

    t = time.perf_counter()
    llm.eval(ids)
    nxt = int(np.argmax(last_logits()))
    prefill_s = time.perf_counter() - t
    samples = []
    for _ in range(a.gen):
        t = time.perf_counter()
        llm.eval([nxt])
        nxt = int(np.argmax(last_logits()))
        samples.append((time.perf_counter() - t) * 1e3)
    median = statistics.median(samples) if samples else 0.0
    out = {
        "engine": "llama.cpp",
        "load_s": load_s,
        "prompt_tokens": len(ids),
        "prefill_tok_per_s": len(ids) / prefill_s,
        "decode_tok_per_s": 1e3 / median if median else 0.0,
        "decode_ms_median": median,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
