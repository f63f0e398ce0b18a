"""One gemma-fit case run by llama.cpp through llama-cpp-python's C API (gemma-fit writes this
file next to the case and runs it with the binding's python; `src/measure/llamacpp.rs`).

argv[1]: a file holding the case as JSON: model path, n_ctx, n_batch, n_ubatch, n_seq, threads, type_k/type_v
(ggml type numbers), flash_attn, swa_full, prompts (token ids, one list per sequence), gen,
warmup, repeats.

The C API, not the binding's `Llama` class: that class keeps its own arrays of logits per token,
whose pages would be counted in the process's resident memory as if llama.cpp held them.

Protocol on stdout, one JSON object per line: {"phase": NAME} at each phase boundary, after
which this process waits for a line on stdin (the parent reads and resets the peak-RSS mark
meanwhile), then {"result": {...}}. llama.cpp's own log goes to stderr.
"""
import json
import sys
import time

import llama_cpp as L
import numpy as np


def phase(name):
    print(json.dumps({"phase": name}), flush=True)
    sys.stdin.readline()


def main():
    with open(sys.argv[1]) as f:
        case = json.load(f)
    prompts = case["prompts"]
    n_seq = len(prompts)
    phase("load")
    t0 = time.perf_counter()
    L.llama_backend_init()
    mparams = L.llama_model_default_params()
    model = L.llama_model_load_from_file(case["model"].encode(), mparams)
    if not model:
        raise SystemExit(f"llama.cpp could not load {case['model']}")
    cparams = L.llama_context_default_params()
    cparams.n_ctx = case["n_ctx"]
    cparams.n_batch = case["n_batch"]
    cparams.n_ubatch = case["n_ubatch"]
    cparams.n_seq_max = n_seq
    cparams.n_threads = case["threads"]
    cparams.n_threads_batch = case["threads"]
    cparams.type_k = case["type_k"]
    cparams.type_v = case["type_v"]
    cparams.flash_attn_type = (
        L.LLAMA_FLASH_ATTN_TYPE_ENABLED if case["flash_attn"] else L.LLAMA_FLASH_ATTN_TYPE_DISABLED
    )
    cparams.swa_full = case["swa_full"]
    ctx = L.llama_init_from_model(model, cparams)
    if not ctx:
        raise SystemExit("llama.cpp could not create the context (its log above says why)")
    load_s = time.perf_counter() - t0
    n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))
    mem = L.llama_get_memory(ctx)
    batch = L.llama_batch_init(max(case["n_batch"], n_seq), 0, 1)

    def decode(tokens):
        """tokens: (token, position, sequence, wants logits) in one batch."""
        for i, (tok, pos, seq, logits) in enumerate(tokens):
            batch.token[i] = tok
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = 1 if logits else 0
        batch.n_tokens = len(tokens)
        rc = L.llama_decode(ctx, batch)
        if rc != 0:
            raise SystemExit(f"llama_decode returned {rc}")

    def argmax(i):
        # A view of llama.cpp's logits row, not a copy.
        return int(np.argmax(np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, i), shape=(n_vocab,))))

    def one_pass(record):
        L.llama_memory_clear(mem, True)
        start = time.perf_counter()
        if record:
            phase("prefill")
        firsts, ttfts = [], []
        for s, ids in enumerate(prompts):
            for c in range(0, len(ids), case["n_batch"]):
                chunk = ids[c : c + case["n_batch"]]
                last = c + len(chunk) == len(ids)
                decode([(t, c + j, s, last and j == len(chunk) - 1) for j, t in enumerate(chunk)])
            firsts.append(argmax(-1))
            ttfts.append(time.perf_counter() - start)
        prefill_s = time.perf_counter() - start
        if record:
            phase("decode")
        steps = []
        nxt = firsts
        pos = [len(p) for p in prompts]
        for _ in range(case["gen"]):
            t = time.perf_counter()
            decode([(nxt[s], pos[s], s, True) for s in range(n_seq)])
            nxt = [argmax(s) for s in range(n_seq)]
            steps.append((time.perf_counter() - t) * 1e3)
            pos = [p + 1 for p in pos]
        return {"prefill_s": prefill_s, "ttft_s": ttfts, "decode_ms": steps}

    if case["warmup"]:
        phase("warmup")
        for _ in range(case["warmup"]):
            one_pass(False)
    passes = [one_pass(True) for _ in range(case["repeats"])]
    phase("end")
    print(json.dumps({"result": {"load_s": load_s, "passes": passes}}), flush=True)
    L.llama_batch_free(batch)
    L.llama_free(ctx)
    L.llama_model_free(model)


if __name__ == "__main__":
    main()
