"""Shared by the PyTorch sides of ./bench (bench_llama.py, bench_linearize.py, bench_matmul.py): the
command line, the SmolLM2-135M configuration (random weights: speed does not depend on their
values), the timing rule (warm-up once, then the best of --reps), the JSON line each measurement
prints, and --serve: the interleaved mode, in which ./bench asks for one timed call at a time."""
import argparse
import json
import resource
import sys
import time

import torch
from transformers import LlamaConfig


def parse_args(extra=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--serve", action="store_true",
                    help="interleaved mode: read a case name per line on stdin, time one call of it, "
                         "print {\"what\", \"seconds\"}; ./bench alternates these with its own calls")
    if extra:
        extra(ap)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    return args


def smollm2_config():
    return LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                       num_attention_heads=9, num_key_value_heads=3, rope_theta=100000.0,
                       rms_norm_eps=1e-5, tie_word_embeddings=True, max_position_embeddings=8192)


def timed(fn, reps):
    fn()  # warm-up
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def report(what, seconds, seq, **extra):
    print(json.dumps({"what": what, "seconds": seconds, "tokens_per_s": seq / seconds,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "torch": torch.__version__, "threads": torch.get_num_threads(), **extra}),
          flush=True)


def serve(cases, factory=None):
    """The interleaved mode. `cases` maps a name to a function; a name with a leading '!' maps to a
    setup that returns the function, run on first use (e.g. stage 2 after stage 1's calls); names
    not in `cases` go to factory(name), when given, which returns the function (cached). Prints
    {"ready": names}, then answers each line on stdin, a case name, with one timed call."""
    ready = {}
    print(json.dumps({"ready": sorted(n.lstrip("!") for n in cases), "torch": torch.__version__,
                      "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        name = line.strip()
        if not name:
            continue
        if name not in ready:
            if name in cases:
                ready[name] = cases[name]
            elif "!" + name in cases:
                ready[name] = cases["!" + name]()  # its setup, once
            elif factory:
                ready[name] = factory(name)
            else:
                print(json.dumps({"what": name, "error": "unknown case"}), flush=True)
                continue
        t0 = time.perf_counter()
        ready[name]()
        print(json.dumps({"what": name, "seconds": time.perf_counter() - t0,
                          "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}),
              flush=True)
