#!/usr/bin/env python3
"""What each KV-cache type costs and saves (issue 21): the README's table, measured here.

For every cache type on the default model (Gemma 3 270M Q4_K_M):
  * quality against the f16 cache over the shipped text (`gemma-fit quality`, 2048-token chunks,
    the reference keeping its top 2048 tokens per position): mean KL, top-1 agreement, PPL;
  * KV bytes, peak RSS and decode speed at 8K and 32K context, the context before the prompt
    filled with random keys and values (`run --fill-kv synthetic`: memory and the cost of
    attending are those of a real prefill, its compute is skipped);
and decode speed of f16, q8_0 and q4_0 on synthetic 1B (Q4_K_M) at the same depths. Speed runs
alternate the types round by round (this machine's speed drifts by ±15% between runs), and the
table gives each type's median and its ratio to f16 in the same rounds.

Usage: scripts/kv-cache-table.py [--rounds N] [--out DIR] [--reuse-quality FILE]
  (default results/kv-cache/; ~20 min on 2 cores, 9 with --reuse-quality). Prints the markdown
  tables; every record is kept in DIR/records.jsonl. --reuse-quality takes the quality records of
  an earlier run's records.jsonl (same build of the cache code) instead of measuring them again.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "gemma-fit")
TYPES = ["f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "q8_0/f16"]
SPEED_1B = ["f16", "q8_0", "q4_0"]
DEPTHS = [8192, 32768]
MIB = 1 << 20


def gemma_fit(*args):
    out = subprocess.run([BIN, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(ROOT, "results", "kv-cache"))
    ap.add_argument("--reuse-quality", metavar="FILE")
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    os.makedirs(a.out, exist_ok=True)
    reused = []
    if a.reuse_quality:
        reused = [json.loads(l) for l in open(a.reuse_quality)]
        reused = [r for r in reused if r.get("quality")]
    records = open(os.path.join(a.out, "records.jsonl"), "w")

    def keep(r):
        records.write(json.dumps(r) + "\n")
        records.flush()
        return r

    # Quality against the f16 cache.
    if reused:
        quality = {r["params"]["kv_dtype"]: keep(r)["quality"] for r in reused}
    else:
        ref = os.path.join(a.out, "f16.logits")
        print("quality: f16 reference", file=sys.stderr)
        base = keep(gemma_fit("quality", "--kv-dtype", "f16", "--ctx", "2048", "--top-k", "2048",
                              "--save-logits", ref, "--json"))
        quality = {"f16": base["quality"]}
        for t in TYPES:
            if t == "f16":
                continue
            print(f"quality: {t}", file=sys.stderr)
            quality[t] = keep(gemma_fit("quality", "--kv-dtype", t, "--against", ref, "--json"))["quality"]

    # Memory and speed, the types alternating within each round.
    speed = {}  # (model, kv, depth) -> [tok/s per round]
    memory = {}  # (kv, depth) -> (kv bytes, peak rss)
    for rnd in range(a.rounds):
        for model, types in [("default", TYPES), ("synthetic:1b", SPEED_1B)]:
            for depth in DEPTHS:
                for t in types:
                    print(f"round {rnd + 1}: {model} {t} ctx {depth}", file=sys.stderr)
                    args = ["run", "-m", model, "--ctx", str(depth), "--prompt-tokens", "16",
                            "--gen", "32", "--fill-kv", "synthetic", "--kv-dtype", t, "--json"]
                    if model.startswith("synthetic"):
                        args += ["--quant", "q4_k_m"]
                    r = keep(gemma_fit(*args))
                    m = r["metrics"]
                    speed.setdefault((model, t, depth), []).append(m["decode_tok_per_s"]["median"])
                    if model == "default":
                        memory[(t, depth)] = (m["kv_bytes"], m["peak_rss_bytes"])

    def ratio(model, t, depth):
        pairs = zip(speed[(model, t, depth)], speed[(model, "f16", depth)])
        return statistics.median(x / y for x, y in pairs)

    med = lambda model, t, d: statistics.median(speed[(model, t, d)])
    print("| KV (K/V) | KV MiB at 32K | peak MiB at 32K | decode tok/s at 8K | at 32K | "
          "KL vs f16 cache (nats) | top-1 vs f16 | PPL |")
    print("|---|---|---|---|---|---|---|---|")
    for t in TYPES:
        q = quality[t]
        c = q.get("against")
        kl = f"{c['kl_mean']['value']:.5f} ± {c['kl_mean']['unc']:.5f}" if c else "(reference)"
        top1 = f"{c['top1_pct']['value']:.2f} %" if c else "—"
        kvb, peak = memory[(t, 32768)]
        print(f"| {t} | {kvb / MIB:.1f} | {peak / MIB:.1f} | {med('default', t, 8192):.1f} "
              f"({ratio('default', t, 8192):.2f}×) | {med('default', t, 32768):.1f} "
              f"({ratio('default', t, 32768):.2f}×) | {kl} | {top1} | {q['ppl']['value']:.3f} |")
    print()
    print("| model | KV | decode tok/s at 8K | ratio to f16 | at 32K | ratio to f16 |")
    print("|---|---|---|---|---|---|")
    for model, types in [("default", SPEED_1B), ("synthetic:1b", SPEED_1B)]:
        for t in types:
            print(f"| {model} | {t} | {med(model, t, 8192):.1f} | {ratio(model, t, 8192):.2f} | "
                  f"{med(model, t, 32768):.1f} | {ratio(model, t, 32768):.2f} |")


if __name__ == "__main__":
    main()
