#!/usr/bin/env python3
"""What llama.cpp allocates, read from its own log: one context per setting, in a fresh process.

For each setting of the grid (n_ctx × swa_full × n_ubatch × K/V type × flash attention) this
creates a llama-cpp-python context on MODEL (verbose) and parses the lines llama.cpp prints:

  llama_context:        CPU  output buffer size =     1.00 MiB
  llama_kv_cache_iswa: creating non-SWA KV cache, size = 32768 cells
  llama_kv_cache:        CPU KV buffer size =    51.00 MiB
  llama_kv_cache_iswa: creating     SWA KV cache, size = 1024 cells
  llama_kv_cache:        CPU KV buffer size =     7.97 MiB
  ~llama_context:        CPU compute buffer size is 514.5020 MiB, matches expectation of ...

and writes them as JSON (`gemma-fit`'s llama.cpp profile is tested against this file:
tests/data/llamacpp/memory-270m.json, `tests/estimate.rs`).

  scripts/llamacpp_memory.py --python "$(scripts/install-llamacpp.sh)" MODEL > out.json

(`scripts/install-llamacpp.sh` installs llama-cpp-python 0.3.36 and prints its python.) About a
minute for the default grid on 2 cores.
"""
import argparse
import itertools
import json
import re
import subprocess
import sys

TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8}

# One context, created in this child process (llama.cpp logs to the C stderr).
# The binding has no n_seq_max argument: it is set on the context parameters just before the
# context is made (llama-server's -np).
CHILD = """
import sys
import llama_cpp._internals as internals
from llama_cpp import Llama
model, n_ctx, n_seq, swa_full, k, v, ubatch, fa, types = sys.argv[1:10]
types = dict(t.split("=") for t in types.split(","))
make = internals.LlamaContext.__init__
def with_seqs(self, *, model, params, verbose=True):
    params.n_seq_max = int(n_seq)
    make(self, model=model, params=params, verbose=verbose)
internals.LlamaContext.__init__ = with_seqs
Llama(model_path=model, n_ctx=int(n_ctx), n_batch=2048, n_ubatch=int(ubatch),
      swa_full=swa_full == "1", type_k=int(types[k]), type_v=int(types[v]),
      flash_attn=fa == "on", n_threads=2, verbose=True)
"""

MIB = r"([0-9.]+) MiB"


def probe(python, model, setting):
    types = ",".join(f"{k}={v}" for k, v in TYPES.items())
    args = [python, "-c", CHILD, model] + [str(setting[k]) for k in
            ("n_ctx", "n_seq", "swa_full", "type_k", "type_v", "n_ubatch", "flash_attn")] + [types]
    p = subprocess.run(args, capture_output=True, text=True)
    log = p.stdout + p.stderr
    if p.returncode != 0:
        return {**setting, "error": log.strip().splitlines()[-1] if log.strip() else f"exit {p.returncode}"}
    cells = [int(c) for c in re.findall(r"creating\s+(?:non-SWA|SWA) KV cache, size = (\d+) cells", log)]
    kv = [float(x) for x in re.findall(r"KV buffer size =\s+" + MIB, log)]
    out = re.findall(r"output buffer size =\s+" + MIB, log)
    compute = re.findall(r"~llama_context:\s+CPU compute buffer size is " + MIB, log)
    n_ctx_seq = re.findall(r"n_ctx_seq\s+=\s+(\d+)", log)
    return {
        **setting,
        "n_ctx_seq": int(n_ctx_seq[0]) if n_ctx_seq else None,
        "cells": {"global": cells[0], "swa": cells[1]} if len(cells) == 2 else None,
        "kv_mib": {"global": kv[0], "swa": kv[1]} if len(kv) == 2 else None,
        "output_mib": float(out[0]) if out else None,
        "compute_mib": float(compute[0]) if compute else None,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--python", default=sys.executable, help="the llama-cpp-python environment's python")
    ap.add_argument("--ctx", default="8192,32768")
    ap.add_argument("--ubatch", default="256,512,1024")
    ap.add_argument("--seqs", default="1")
    # (K/V type, flash attention): a quantized V cache needs flash attention.
    ap.add_argument("--kv", default="f16:off,f16:on,q8_0:on")
    a = ap.parse_args()
    version = subprocess.run([a.python, "-c", "import llama_cpp; print(llama_cpp.__version__)"],
                             capture_output=True, text=True).stdout.strip()
    rows = []
    for ctx, seqs, swa, ub, kvfa in itertools.product(
            a.ctx.split(","), a.seqs.split(","), ("0", "1"), a.ubatch.split(","), a.kv.split(",")):
        kv, fa = kvfa.split(":")
        k, v = (kv.split("/") + [kv])[:2]
        setting = {"n_ctx": int(ctx), "n_seq": int(seqs), "swa_full": swa, "n_ubatch": int(ub),
                   "type_k": k, "type_v": v, "flash_attn": fa}
        rows.append(probe(a.python, a.model, setting))
        print(f"{len(rows)}: {rows[-1]}", file=sys.stderr)
    json.dump({"producer": f"llama-cpp-python {version} (CPU, n_batch 2048)",
               "model": a.model.rsplit("/", 1)[-1], "settings": rows}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
