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

// A cap on the limit the tiles are chosen for (0: none, the card's own). With it a GPU runs the
// tiles of a card with less shared memory, e.g. an H100 those of an RTX 4090 (99 KiB), so the
// tests prove every tile on whatever card is lent; the emulator's limit itself is
// emu::set_shared_memory_optin.
void set_shared_limit_cap(size_t bytes);
size_t shared_limit_cap();
// The current device's own per-block opt-in limit, in bytes (no cap).
size_t device_shared_limit();

}  // namespace lolcats::cuda
