"""PyTorch side of `./bench generate`: transformers' LlamaForCausalLM (SmolLM2-135M configuration,
random weights: speed does not depend on their values) decoding with its KV cache (DynamicCache),
the same batches, contexts, steps and threads as ours.

As on our side, the cache of every sequence is filled with random keys and values of `context`
positions instead of running a prefill (a decode step's time depends on the cache's length, not on
its values; a real prefill of 32k tokens would take minutes here). Then `--steps` greedy steps each
add one token to every sequence: tokens/s = batch x steps / seconds, after one warm-up step.
Prints one JSON line per case; a case whose cache would pass --max-cache-gib is reported skipped."""
import argparse
import json
import resource
import time

import torch
from transformers import DynamicCache, LlamaForCausalLM

from bench_common import smollm2_config

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, required=True)
ap.add_argument("--contexts", type=int, nargs="+", required=True)
ap.add_argument("--batches", type=int, nargs="+", required=True)
ap.add_argument("--steps", type=int, default=16)
ap.add_argument("--dtypes", nargs="+", default=["f32", "bf16"])
ap.add_argument("--max-cache-gib", type=float, default=8.0)
args = ap.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)

cfg = smollm2_config()
cfg.max_position_embeddings = max(args.contexts) + args.steps + 1
L, Hkv, D = cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.hidden_size // cfg.num_attention_heads

for dtype_name in args.dtypes:
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    model = LlamaForCausalLM(cfg).to(dtype).eval()
    for batch in args.batches:
        for ctx in args.contexts:
            row = {"dtype": dtype_name, "batch": batch, "context": ctx, "steps": args.steps}
            cache_bytes = 2 * L * batch * (ctx + args.steps + 1) * Hkv * D * torch.finfo(dtype).bits // 8
            row["kv_cache_mib"] = cache_bytes / 2**20
            if cache_bytes > args.max_cache_gib * 2**30:
                print(json.dumps({**row, "skipped": "KV cache over --max-cache-gib"}), flush=True)
                continue
            cache = DynamicCache()
            for layer in range(L):
                k = torch.randn(batch, Hkv, ctx, D, dtype=dtype)
                v = torch.randn(batch, Hkv, ctx, D, dtype=dtype)
                cache.update(k, v, layer)
            ids = torch.randint(0, cfg.vocab_size, (batch, 1))
            pos = ctx

            def step():
                global ids, pos
                with torch.no_grad():
                    out = model(input_ids=ids, past_key_values=cache, use_cache=True,
                                position_ids=torch.full((batch, 1), pos),
                                cache_position=torch.tensor([pos]))
                ids = out.logits[:, -1].argmax(-1, keepdim=True)
                pos += 1

            step()  # warm-up
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            sec = time.perf_counter() - t0
            print(json.dumps({**row, "seconds": sec, "tokens_per_s": batch * args.steps / sec,
                              "ms_per_step": 1e3 * sec / args.steps,
                              "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                              "torch": torch.__version__, "threads": torch.get_num_threads()}),
                  flush=True)
            del cache
