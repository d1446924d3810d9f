// Device memory for Tensor (tensor/tensor.h declares these hooks; tensor/no_cuda.cpp is the
// CPU-only build's version).
#include <algorithm>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "cuda/common.cuh"
#include "cuda/elementwise.h"
#include "tensor/device.h"
#include "tensor/tensor.h"

namespace lolcats {

namespace {

// Asks cudaMalloc, and on failure says how much was asked and how much is free, in one line.
void* raw_malloc(size_t bytes, bool may_fail) {
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, bytes > 0 ? bytes : 1);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // clear the sticky error
    if (may_fail) return nullptr;
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    fail(__FILE__, __LINE__,
         strfmt("GPU out of memory: %.1f MiB requested, %.1f MiB free of %.1f MiB; reduce the batch "
                "or sequence length", bytes / 1048576.0, free_b / 1048576.0, total_b / 1048576.0));
  }
  cudaCheck(err);
  return p;
}

#ifndef LOLCATS_CUDA_EMU
// Tensors come and go every op, and cudaMalloc/cudaFree are slow and may synchronise the device.
// So freed blocks are kept in a free list per size class and handed out again: after the first
// training step, a step makes no cudaMalloc at all (every step asks for the same sizes). Size
// classes: multiples of 512 B up to 1 MiB, then of 2 MiB (at most 2 MiB of slack per block). When
// cudaMalloc fails, the cached blocks are released and it is asked once more.
// (Not under the emulator: there, exact host allocations let AddressSanitizer see overruns.)
class BlockCache {
 public:
  static size_t size_class(size_t bytes) {
    size_t unit = bytes <= (1u << 20) ? 512 : (2u << 20);
    return (std::max<size_t>(bytes, 1) + unit - 1) / unit * unit;
  }
  void* alloc(size_t bytes) {
    size_t sz = size_class(bytes);
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(sz);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        cached_ -= sz;
        return note_use(p, sz);
      }
    }
    void* p = raw_malloc(sz, true);
    if (!p) {
      release();
      p = raw_malloc(sz, false);
    }
    std::lock_guard<std::mutex> lock(mu_);
    return note_use(p, sz);
  }
  void free(void* p) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = size_.find(p);
    if (it == size_.end()) return;  // not ours (never happens); leak rather than crash
    free_[it->second].push_back(p);
    cached_ += it->second;
    in_use_ -= it->second;
  }
  void release() {  // hands every cached block back to the driver
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [sz, blocks] : free_)
      for (void* p : blocks) {
        cudaFree(p);
        size_.erase(p);
      }
    free_.clear();
    cached_ = 0;
  }
  DeviceMemoryStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return {in_use_, peak_, cached_};
  }
  void reset_peak() {
    std::lock_guard<std::mutex> lock(mu_);
    peak_ = in_use_;
  }
 private:
  void* note_use(void* p, size_t sz) {  // mu_ held
    size_[p] = sz;
    in_use_ += sz;
    peak_ = std::max(peak_, in_use_);
    return p;
  }
  std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  std::unordered_map<void*, size_t> size_;
  size_t in_use_ = 0, peak_ = 0, cached_ = 0;
};
BlockCache& cache() {
  static BlockCache* c = new BlockCache;  // never destroyed: tensors may be freed at exit
  return *c;
}
#endif

}  // namespace

#ifdef LOLCATS_CUDA_EMU
void* device_malloc(size_t bytes) { return raw_malloc(bytes, false); }
void device_free(void* p) {
  if (p) cudaFree(p);  // no check: called from destructors, possibly during error unwinding
}
DeviceMemoryStats device_memory_stats() { return {}; }
void device_memory_reset_peak() {}
#else
void* device_malloc(size_t bytes) { return cache().alloc(bytes); }
void device_free(void* p) {
  if (p) cache().free(p);
}
DeviceMemoryStats device_memory_stats() { return cache().stats(); }
void device_memory_reset_peak() { cache().reset_peak(); }
#endif

DeviceMemoryInfo device_memory_info() {
  DeviceMemoryInfo m;
  cudaCheck(cudaMemGetInfo(&m.free, &m.total));
  return m;
}

void device_synchronize() { cudaCheck(cudaDeviceSynchronize()); }

void device_memset_zero(void* p, size_t bytes) { cudaCheck(cudaMemset(p, 0, bytes)); }

void device_upload(void* dst, const void* src, size_t bytes) {
  cudaCheck(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}
void device_download(void* dst, const void* src, size_t bytes) {
  cudaCheck(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}
void device_copy(void* dst, const void* src, size_t bytes) {
  cudaCheck(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice));
}

void device_convert(void* dst, DType dt, const void* src, DType st, int64_t n) {
  if (dt == st) {
    device_copy(dst, src, size_t(n) * dtype_size(dt));
  } else if (st == DType::f32 && dt == DType::bf16) {
    cuda::cast_f32_to_bf16(static_cast<bf16*>(dst), static_cast<const float*>(src), n, nullptr);
  } else if (st == DType::bf16 && dt == DType::f32) {
    cuda::cast_bf16_to_f32(static_cast<float*>(dst), static_cast<const bf16*>(src), n, nullptr);
  } else {
    fail(__FILE__, __LINE__, strfmt("no conversion from %s to %s", dtype_name(st), dtype_name(dt)));
  }
}

bool gpu_visible() {
#ifdef LOLCATS_CUDA_EMU
  return false;
#else
  return cuda_available();
#endif
}

std::string device_card_name() {
  int dev = 0;
  cudaDeviceProp p;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&p, dev) != cudaSuccess) return "an unknown cuda device";
  return strfmt("%s (sm_%d%d)", p.name, p.major, p.minor);
}

bool cuda_available() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

}  // namespace lolcats
