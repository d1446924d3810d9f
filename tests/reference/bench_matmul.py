"""PyTorch side of `./bench matmul`: F.linear on the same shapes and thread count, JSON lines."""
import argparse
import json
import time

import torch
import torch.nn.functional as F

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, required=True)
ap.add_argument("--shapes", nargs="+", required=True, help="MxKxN: x (M,K) @ W^T, W (N,K)")
args = ap.parse_args()
torch.set_num_threads(args.threads)

for s in args.shapes:
    M, K, N = map(int, s.split("x"))
    x = torch.full((M, K), 0.01)
    w = torch.full((N, K), 0.02)
    F.linear(x, w)  # warm up
    reps, t0 = 0, time.perf_counter()
    while True:
        F.linear(x, w)
        reps += 1
        t = time.perf_counter()
        if t - t0 >= 1.0:
            break
    sec = (t - t0) / reps
    print(json.dumps({"shape": s, "seconds": sec, "gflops": 2.0 * M * N * K / sec / 1e9,
                      "torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)
