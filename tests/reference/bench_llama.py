"""PyTorch side of `./bench llama`: LlamaForCausalLM with the SmolLM2-135M configuration (random
weights: speed does not depend on their values), batch 1, float32, the same T and thread count.
Prints one JSON line per measurement."""
import argparse
import json
import resource
import time

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, required=True)
ap.add_argument("--seq", type=int, default=1024)
ap.add_argument("--reps", type=int, default=3)
args = ap.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)

cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                  num_attention_heads=9, num_key_value_heads=3, rope_theta=100000.0, rms_norm_eps=1e-5,
                  tie_word_embeddings=True, max_position_embeddings=8192)
model = LlamaForCausalLM(cfg).float()
ids = torch.randint(0, cfg.vocab_size, (1, args.seq))
targets = torch.randint(0, cfg.vocab_size, (args.seq,))


def timed(fn):
    fn()  # warm-up
    best = float("inf")
    for _ in range(args.reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def fwd():
    with torch.no_grad():
        model(ids)


def fwd_bwd():
    model.zero_grad(set_to_none=True)
    logits = model(ids).logits.view(-1, cfg.vocab_size)
    F.cross_entropy(logits, targets).backward()


for name, fn in (("forward", fwd), ("forward_backward", fwd_bwd)):
    sec = timed(fn)
    print(json.dumps({"what": name, "seconds": sec, "tokens_per_s": args.seq / sec,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "torch": torch.__version__, "attn": model.config._attn_implementation,
                      "threads": torch.get_num_threads()}), flush=True)
