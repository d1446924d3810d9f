// The cap on the shared memory the tiles are chosen for (cuda/kernel_tile.h); the choice itself is
// cuda/shared_limit.cuh.
#include <atomic>

#include "cuda/shared_limit.cuh"

namespace lolcats::cuda {

namespace {
std::atomic<size_t> g_cap{0};
}  // namespace

void set_shared_limit_cap(size_t bytes) { g_cap.store(bytes); }
size_t shared_limit_cap() { return g_cap.load(); }

size_t device_shared_limit() {
  int device = 0, bytes = 0;
  cudaCheck(cudaGetDevice(&device));
  cudaCheck(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return size_t(bytes);
}

}  // namespace lolcats::cuda
