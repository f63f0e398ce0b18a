#!/usr/bin/env python3
"""Reference outputs from llama.cpp (llama-cpp-python) for prompts of our own.

    $GEMMA_FIT_HOME/peer/llamacpp-venv/bin/python scripts/llamacpp_reference.py \
        --model MODEL.gguf --prompts tests/data/prompts.json --out tests/data/llamacpp/generate-long.json

Same format as tests/data/llamacpp/generate.json: prompt_ids (BOS added, special tokens not
parsed), 32 greedy_ids, margins (top-1 minus top-2 logit at each greedy step) and top20
([id, logit]) at the last prompt position. (scripts/install-llamacpp.sh installs the venv.)
"""
import argparse
import json

import numpy as np
from llama_cpp import Llama


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    prompts = json.load(open(a.prompts))
    cases = []
    for p in prompts:
        llm = Llama(model_path=a.model, n_ctx=4096, n_batch=512, n_threads=a.threads, verbose=False)
        ids = llm.tokenize(p["prompt"].encode(), add_bos=True, special=False)
        n_vocab = llm.n_vocab()
        logits = lambda: np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,)).copy()
        llm.eval(ids)
        first = logits()
        top = np.argsort(-first)[:20]
        greedy, margins, cur = [], [], first
        for _ in range(a.steps):
            order = np.argsort(-cur)[:2]
            greedy.append(int(order[0]))
            margins.append(float(cur[order[0]] - cur[order[1]]))
            llm.eval([int(order[0])])
            cur = logits()
        cases.append({
            "name": p["name"],
            "prompt": p["prompt"],
            "prompt_ids": ids,
            "greedy_ids": greedy,
            "greedy_text": llm.detokenize(greedy).decode("utf-8", "replace"),
            "margins": margins,
            "top20": [[int(i), float(first[i])] for i in top],
        })
        print(f"{p['name']}: {len(ids)} prompt tokens", flush=True)
    meta = {
        "engine": "llama.cpp via llama-cpp-python (scripts/llamacpp_reference.py)",
        "model": a.model.split("/")[-1],
        "tokenize": "add_special=True (BOS), parse_special=False",
        "decode": f"greedy argmax, CPU, {a.threads} threads",
    }
    json.dump({"meta": meta, "cases": cases}, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
