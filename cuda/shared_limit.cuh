// Shared memory per block, chosen from the device's limit at run time. A block may use more than
// 48 KiB of dynamic shared memory only after cudaFuncSetAttribute, and never more than the card's
// opt-in limit (cudaDevAttrMaxSharedMemoryPerBlockOptin): 227 KiB on sm_90 (H100, H200), 163 KiB on
// sm_80 (A100), 99 KiB on sm_86/89 (RTX 30xx/40xx, A10, L4). A kernel that needs much is compiled
// for a few tile shapes (template parameters, so each shape is its own fully unrolled instance)
// and its launcher takes the first, largest, shape that fits: on sm_90 the fastest one, elsewhere
// a smaller one that computes the same math in another order of work.
#pragma once
#include <atomic>

#include "cuda/common.cuh"
#include "cuda/kernel_tile.h"

namespace lolcats::cuda {

inline size_t capped(size_t bytes) {
  const size_t cap = shared_limit_cap();
  return cap != 0 && cap < bytes ? cap : bytes;
}

// The current device's per-block opt-in limit, in bytes (under shared_limit_cap, kernel_tile.h);
// asked of the runtime once per device.
inline size_t shared_optin_bytes() {
  int device = 0;
  cudaCheck(cudaGetDevice(&device));
#ifdef LOLCATS_CUDA_EMU
  // The emulator's limit is a knob that tests turn between calls (emu::set_shared_memory_optin),
  // so it is asked every time; the question costs nothing there.
  int bytes = 0;
  cudaCheck(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return capped(size_t(bytes));
#else
  constexpr int kMaxDevices = 64;
  static std::atomic<int> cached[kMaxDevices] = {};  // 0: not asked yet
  int bytes = device < kMaxDevices ? cached[device].load(std::memory_order_relaxed) : 0;
  if (bytes == 0) {
    cudaCheck(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    if (device < kMaxDevices) cached[device].store(bytes, std::memory_order_relaxed);
  }
  return capped(size_t(bytes));
#endif
}

// Allows `kernel` `bytes` of dynamic shared memory (above the default 48 KiB a launch fails).
template <typename Kernel>
void allow_shared(Kernel* kernel, size_t bytes) {
  cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

// The first of `candidates` (rows, cols; largest first) whose shared memory, bytes_of(rows, cols),
// fits the device's limit. If none does, one error names the kernel, the smallest need and the
// card's limit.
template <size_t N, typename BytesOf>
KernelTile choose_tile(const char* kernel, const KernelTile (&candidates)[N], BytesOf bytes_of) {
  const size_t limit = shared_optin_bytes();
  KernelTile smallest;
  for (KernelTile t : candidates) {
    t.shared_bytes = bytes_of(t.rows, t.cols);
    if (t.shared_bytes <= limit) return t;
    smallest = t;
  }
  fail(__FILE__, __LINE__,
       strfmt("%s (cuda): its smallest tile (%d x %d) needs %zu bytes of shared memory per block; this "
              "device allows %zu (cudaDevAttrMaxSharedMemoryPerBlockOptin)",
              kernel, smallest.rows, smallest.cols, smallest.shared_bytes, limit));
}

}  // namespace lolcats::cuda
