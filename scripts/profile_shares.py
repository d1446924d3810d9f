#!/usr/bin/env python3
"""Where a CPU step's time goes: a perf profile grouped into the kinds of work of a training step.

    perf record -F 499 -o perf.data -- ./bench llama --reps 3
    scripts/profile_shares.py perf.data [more.data ...]

For each file, prints the share of samples (all threads) and the CPU-seconds of each group: the
GEMMs (ours and Eigen's), the OpenMP runtime (threads waiting at barriers), exp, attention,
SwiGLU, cross-entropy, RMSNorm, RoPE, memory traffic (memset/memcpy, page faults) and the rest.
"""
import re
import subprocess
import sys

# (group, pattern on "dso symbol"); the first match wins.
GROUPS = [
    ("GEMM: packed kernel + packing", r"micro_kernel|gemm_packed|pack_b"),
    ("GEMM: Eigen", r"Eigen::internal::(gebp|gemm_pack|general_matrix_matrix|gemv|general_matrix_vector)"),
    ("OpenMP runtime (waiting)", r"libgomp"),
    ("exp (libm)", r"libm\.so.*exp|expf?@plt"),
    ("attention (scores, softmax)", r"attention|tile_scores|softmax"),
    ("SwiGLU", r"swiglu"),
    ("cross-entropy", r"cross_entropy"),
    ("RMSNorm", r"rmsnorm"),
    ("RoPE", r"rotate|rope|sincos"),
    ("memory: memset/memcpy, page faults", r"libc\.so.*mem|\[kernel|page|clear_page"),
]


def shares(path):
    out = subprocess.run(["perf", "report", "-i", path, "--no-children", "--sort", "dso,sym", "--stdio",
                          "-F", "overhead,sample,dso,sym"], capture_output=True, text=True, check=True).stdout
    totals = {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\d+)\s+(\S+)\s+\[[.k]\]\s+(.*)", line)
        if not m:
            continue
        samples, text = int(m.group(2)), m.group(3) + " " + m.group(4)
        group = next((g for g, pat in GROUPS if re.search(pat, text)), "other")
        totals[group] = totals.get(group, 0) + samples
    return totals


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for path in sys.argv[1:]:
        hz = None
        header = subprocess.run(["perf", "report", "-i", path, "--header-only"], capture_output=True, text=True).stdout
        m = re.search(r"sample_freq\s*\}?\s*=\s*(\d+)", header)
        if m:
            hz = int(m.group(1))
        totals = shares(path)
        n = sum(totals.values())
        print(f"{path}: {n} samples" + (f" at {hz} Hz ({n / hz:.1f} CPU-seconds)" if hz else ""))
        order = [g for g, _ in GROUPS] + ["other"]
        for g in order:
            if g in totals:
                sec = f"{totals[g] / hz:7.2f} s" if hz else ""
                print(f"  {g:38s} {100 * totals[g] / n:5.1f}%  {sec}")


if __name__ == "__main__":
    main()
