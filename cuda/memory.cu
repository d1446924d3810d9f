// Device memory for Tensor (tensor/tensor.h declares these hooks; tensor/no_cuda.cpp is the
// CPU-only build's version).
#include <algorithm>
#include <atomic>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "cuda/common.cuh"
#include "cuda/elementwise.h"
#include "cuda/memory.h"
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

// Tensors come and go every op, and cudaMalloc/cudaFree are slow and may synchronise the device.
// So freed blocks are kept in a free list per size class and handed out again: after the first
// training step, a step makes no cudaMalloc at all (every step asks for the same sizes). Size
// classes: multiples of 512 B up to 1 MiB, then of 2 MiB (at most 2 MiB of slack per block). When
// cudaMalloc fails, the cached blocks are released and it is asked once more.
//
// A block freed on a stream other than the legacy one (free_on_stream) waits in `pending_` with an
// event recorded on that stream, and joins the free list only once the event has completed: work
// still queued there may read it (cuda/README.md, "Streams and scratch memory").
//
// Under the emulator the cache is off unless a test turns it on (device_cache_for_tests): exact
// host allocations let AddressSanitizer see overruns.
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
      reclaim();
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
  // Takes back a block of ours (false: not ours); `keep` false hands it to the driver instead.
  bool free(void* p, bool keep = true) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = size_.find(p);
    if (it == size_.end()) return false;
    in_use_ -= it->second;
    if (keep) {
      free_[it->second].push_back(p);
      cached_ += it->second;
    } else {
      size_.erase(it);
      cudaFree(p);
    }
    return true;
  }
  // Takes back a block that work queued on `stream` (not the legacy stream) may still use.
  bool free_on_stream(void* p, cudaStream_t stream) {
    cudaEvent_t done = nullptr;
    if (cudaEventCreateWithFlags(&done, cudaEventDisableTiming) != cudaSuccess ||
        cudaEventRecord(done, stream) != cudaSuccess) {
      // No event: wait for the stream instead (correct, only slower). No check: destructors.
      cudaGetLastError();
      if (done) cudaEventDestroy(done);
      cudaStreamSynchronize(stream);
      return free(p);
    }
    std::lock_guard<std::mutex> lock(mu_);
    auto it = size_.find(p);
    if (it == size_.end()) {
      cudaEventDestroy(done);
      return false;
    }
    in_use_ -= it->second;
    cached_ += it->second;
    pending_.push_back({p, it->second, done});
    return true;
  }
  void release() {  // hands every cached block back to the driver
    // cudaFree waits for the device anyway, so the blocks still pending on streams may go too.
    // (No check, and under the emulator a fault of queued work is kept for the next
    // synchronisation: this runs in destructors.)
#ifdef LOLCATS_CUDA_EMU
    emu::synchronize_device_for_free();
#else
    cudaDeviceSynchronize();
#endif
    std::lock_guard<std::mutex> lock(mu_);
    reclaim();
    for (auto& [sz, blocks] : free_)
      for (void* p : blocks) {
        cudaFree(p);
        size_.erase(p);
      }
    free_.clear();
    cached_ = 0;
    for (const Pending& b : pending_) cached_ += b.bytes;  // none once the device is idle
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
  struct Pending {
    void* p;
    size_t bytes;
    cudaEvent_t done;  // recorded on the stream the block was freed on
  };
  void* note_use(void* p, size_t sz) {  // mu_ held
    size_[p] = sz;
    in_use_ += sz;
    peak_ = std::max(peak_, in_use_);
    return p;
  }
  void reclaim() {  // mu_ held: pending blocks whose stream has passed their event become free
    for (size_t i = 0; i < pending_.size();) {
      cudaError_t e = cudaEventQuery(pending_[i].done);
      if (e == cudaErrorNotReady) {
        i++;
        continue;
      }
      if (e != cudaSuccess) cudaGetLastError();  // an earlier fault, reported by its own sync
      cudaEventDestroy(pending_[i].done);
      free_[pending_[i].bytes].push_back(pending_[i].p);
      pending_[i] = pending_.back();
      pending_.pop_back();
    }
  }
  std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  std::vector<Pending> pending_;
  std::unordered_map<void*, size_t> size_;
  size_t in_use_ = 0, peak_ = 0, cached_ = 0;
};
BlockCache& cache() {
  static BlockCache* c = new BlockCache;  // never destroyed: tensors may be freed at exit
  return *c;
}

bool is_legacy_stream(cudaStream_t s) { return s == nullptr || s == cudaStreamLegacy; }

#ifdef LOLCATS_CUDA_EMU
std::atomic<bool> g_cache_on{false};  // device_cache_for_tests
bool caching() { return g_cache_on; }
#else
constexpr bool caching() { return true; }
#endif

}  // namespace

void* device_malloc(size_t bytes) { return caching() ? cache().alloc(bytes) : raw_malloc(bytes, false); }
void device_free(void* p) {
  if (!p || cache().free(p, caching())) return;
  // Not the cache's: an exact allocation (emulator without the cache). No check: called from
  // destructors, possibly during error unwinding. (With the cache on, a block not ours never
  // happens; it is leaked rather than handed to cudaFree.)
  if (!caching()) cudaFree(p);
}
void device_free_on_stream(void* p, cuda::Stream stream) {
  if (!p) return;
  // The legacy stream runs in order; and without the cache (emulator), cudaFree itself waits for
  // the device.
  if (is_legacy_stream(stream) || !caching()) device_free(p);
  else cache().free_on_stream(p, stream);
}
void device_cache_for_tests(bool on) {
#ifdef LOLCATS_CUDA_EMU
  g_cache_on = on;
  if (!on) cache().release();
#else
  (void)on;
#endif
}
DeviceMemoryStats device_memory_stats() { return caching() ? cache().stats() : DeviceMemoryStats{}; }
void device_memory_reset_peak() { cache().reset_peak(); }

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
