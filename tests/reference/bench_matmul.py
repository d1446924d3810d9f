"""PyTorch side of `./bench matmul`: F.linear on the same shapes and thread count, JSON lines. With
--serve (the interleaved mode, bench_common.serve) a case "N:MxKxN" is N calls of F.linear on that
shape (./bench picks N so that one case takes a fraction of a second and times N of its own)."""
import json
import time

import torch
import torch.nn.functional as F

from bench_common import parse_args, serve

args = parse_args(lambda ap: ap.add_argument("--shapes", nargs="*", default=[],
                                             help="MxKxN: x (M,K) @ W^T, W (N,K)"))


def operands(s):
    M, K, N = map(int, s.split("x"))
    return torch.full((M, K), 0.01), torch.full((N, K), 0.02), 2.0 * M * N * K


def calls(name):  # "N:MxKxN" -> a function making N calls
    n, shape = name.split(":")
    x, w, _ = operands(shape)

    def run():
        for _ in range(int(n)):
            F.linear(x, w)
    return run


if args.serve:
    serve({}, factory=calls)
else:
    for s in args.shapes:
        x, w, flop = operands(s)
        F.linear(x, w)  # warm up
        reps, t0 = 0, time.perf_counter()
        while True:
            F.linear(x, w)
            reps += 1
            t = time.perf_counter()
            if t - t0 >= 1.0:
                break
        sec = (t - t0) / reps
        print(json.dumps({"shape": s, "seconds": sec, "gflops": flop / sec / 1e9,
                          "torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)
