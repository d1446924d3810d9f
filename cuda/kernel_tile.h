// The tile a kernel was launched with, for tests and benchmarks to print and check (host code, no
// CUDA headers). Kernels that need more shared memory than the smallest cards allow are compiled
// for a few tile shapes and pick, at run time, the largest whose shared memory fits the device's
// per-block limit (cuda/shared_limit.cuh).
#pragma once
#include <cstddef>

namespace lolcats::cuda {

struct KernelTile {
  int rows = 0;             // rows a thread block owns (queries, keys or features)
  int cols = 0;             // columns streamed through shared memory per step
  size_t shared_bytes = 0;  // dynamic shared memory per block with this tile
};

}  // namespace lolcats::cuda
