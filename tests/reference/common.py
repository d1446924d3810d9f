"""Shared helpers for the reference scripts.

Each ref_*.py script computes expected values with PyTorch / Hugging Face transformers (never with
our C++), and writes one safetensors fixture that the Catch2 tests read. Inputs are drawn in float32
so that the C++ side sees exactly the same numbers; references are computed in float64 and stored
as F64, so the tests can check our float32 kernels at float32 accuracy and our float64
instantiations at float64 accuracy. Integer tensors (token ids, targets, positions) are I32.

FIXTURE_VERSION is stored in the metadata and checked by tests/helpers.h: bump both together when
the layout of a fixture changes.
"""
import sys

import torch
from safetensors.torch import save_file

FIXTURE_VERSION = "1"


class Fixture:
    def __init__(self, seed):
        self.tensors = {}
        self.gen = torch.Generator().manual_seed(seed)

    def randn(self, *shape, scale=1.0):
        """float32 draw, returned as float64 (exactly representable in float32)."""
        return (torch.randn(*shape, generator=self.gen, dtype=torch.float32) * scale).double()

    def randint(self, low, high, *shape):
        return torch.randint(low, high, shape, generator=self.gen, dtype=torch.int32)

    def put(self, name, t):
        assert name not in self.tensors, name
        t = t.detach().clone().contiguous()
        self.tensors[name] = t.to(torch.int32) if not t.is_floating_point() else t.double()

    def grads(self, prefix, out, inputs):
        """Projects `out` on a random tensor r (stored as prefix.r) and stores d(sum(r*out))/d input
        for each named input. A random projection, not a plain sum: with sum(), softmax and norm
        gradients would be identically zero and prove nothing."""
        r = self.randn(*out.shape) if out.dim() > 0 else self.randn(1)[0]
        self.put(prefix + ".r", r.reshape(out.shape) if out.dim() > 0 else r.reshape(1))
        names = list(inputs)
        gs = torch.autograd.grad((out * r).sum(), [inputs[n] for n in names])
        for n, g in zip(names, gs):
            self.put(prefix + ".d" + n, g)

    def save(self, path):
        save_file(self.tensors, path, metadata={"version": FIXTURE_VERSION, "torch": torch.__version__})
        print(f"wrote {path}: {len(self.tensors)} tensors")


def output_path():
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUTPUT.safetensors")
    return sys.argv[1]
