// The part of the CUDA runtime API that the project uses, for the SIMT emulator build (which links
// no libcudart). Device memory is host memory; every call is synchronous unless a test turned on
// asynchronous streams (streams and events: cuda/emu/streams.{h,cpp}); the emulated device
// reports the limits of an sm_90 GPU (1024 threads per block, 48 KiB of dynamic shared memory
// unless a kernel's cudaFuncSetAttribute raised it, at most the opt-in limit: 227 KiB, or what
// set_shared_memory_optin / LOLCATS_EMU_SHARED_OPTIN made it, to stand for another card) so that a
// launch a real GPU would refuse is refused here too.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "cuda/emu/emu.h"
#include "cuda/emu/scheduler.h"
#include "cuda/emu/streams.h"
#include "tensor/parallel.h"

namespace lolcats::emu {
namespace {

constexpr size_t kDefaultShared = 48 * 1024, kMaxShared = 227 * 1024;

// LOLCATS_EMU_SHARED_OPTIN: bytes, or KiB with a K / KiB suffix; unset: 227 KiB. A value it cannot
// read stops the program: a run meant to prove a smaller card must not quietly run at 227 KiB.
size_t initial_shared_optin() {
  const char* env = std::getenv("LOLCATS_EMU_SHARED_OPTIN");
  if (!env || !*env) return kMaxShared;
  char* end = nullptr;
  unsigned long long n = std::strtoull(env, &end, 10);
  if (end != env && !*end) return size_t(n);
  if (end != env && (std::strcmp(end, "K") == 0 || std::strcmp(end, "KiB") == 0)) return size_t(n) * 1024;
  std::fprintf(stderr, "LOLCATS_EMU_SHARED_OPTIN=%s: expected bytes (101376) or KiB (99K, 99KiB)\n", env);
  std::abort();
}

std::mutex g_mutex;
std::map<const char*, size_t> g_allocations;   // device allocations: base -> bytes
std::map<const void*, size_t> g_shared_limit;  // kernel -> max dynamic shared memory
size_t g_shared_optin = initial_shared_optin();  // the device's per-block opt-in limit
thread_local cudaError_t t_last_error = cudaSuccess;

// Is [p, p + n) inside one device allocation?
bool is_device(const void* p, size_t n) {
  std::lock_guard<std::mutex> lock(g_mutex);
  const char* c = static_cast<const char*>(p);
  auto it = g_allocations.upper_bound(c);
  if (it == g_allocations.begin()) return false;
  --it;
  return c >= it->first && c + n <= it->first + it->second;
}

cudaError_t set_error(cudaError_t e) {
  if (e != cudaSuccess) t_last_error = e;
  return e;
}

// The direction a copy claims must match where its pointers point (cudaMemcpyDefault: anything).
cudaError_t check_copy(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
  if (n == 0) return cudaSuccess;
  bool dst_dev = is_device(dst, n), src_dev = is_device(src, n);
  bool ok = true;
  switch (kind) {
    case cudaMemcpyHostToDevice: ok = dst_dev && !src_dev; break;
    case cudaMemcpyDeviceToHost: ok = !dst_dev && src_dev; break;
    case cudaMemcpyDeviceToDevice: ok = dst_dev && src_dev; break;
    case cudaMemcpyHostToHost: ok = !dst_dev && !src_dev; break;
    default: break;
  }
  return ok ? cudaSuccess : set_error(cudaErrorInvalidValue);
}

// A copy that runs at once, after the blocking streams' queued work (as the legacy stream waits
// for it); `waits` names it as a host wait (streams.h).
cudaError_t copy_now(void* dst, const void* src, size_t n, cudaMemcpyKind kind, bool waits, const char* call) {
  legacy_stream_point();
  if (waits) note_host_wait(call);
  cudaError_t e = check_copy(dst, src, n, kind);
  if (e == cudaSuccess && n) std::memmove(dst, src, n);
  return e;
}

}  // namespace

void set_shared_memory_optin(size_t bytes) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_shared_optin = bytes;
}

size_t shared_memory_optin() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_shared_optin;
}

size_t max_dynamic_shared(const void* func) {
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = g_shared_limit.find(func);
  return std::min(it == g_shared_limit.end() ? kDefaultShared : it->second, g_shared_optin);
}

}  // namespace lolcats::emu

using namespace lolcats::emu;

extern "C" {

cudaError_t cudaMalloc(void** ptr, size_t size) {
  void* p = nullptr;
  if (posix_memalign(&p, 256, size ? size : 1) != 0) return set_error(cudaErrorMemoryAllocation);
  std::memset(p, 0xFF, size);  // poison: uninitialised floats read as NaN
  std::lock_guard<std::mutex> lock(g_mutex);
  g_allocations[static_cast<const char*>(p)] = size ? size : 1;
  *ptr = p;
  return cudaSuccess;
}

cudaError_t cudaFree(void* ptr) {
  if (!ptr) return cudaSuccess;
  if (async_streams()) synchronize_device_for_free();  // as on a GPU: queued work may use ptr
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = g_allocations.find(static_cast<const char*>(ptr));
    if (it == g_allocations.end()) return set_error(cudaErrorInvalidValue);
    g_allocations.erase(it);
  }
  std::free(ptr);
  return cudaSuccess;
}

cudaError_t cudaMallocHost(void** ptr, size_t size) {
  *ptr = std::malloc(size ? size : 1);
  return *ptr ? cudaSuccess : set_error(cudaErrorMemoryAllocation);
}
cudaError_t cudaFreeHost(void* ptr) {
  std::free(ptr);
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
  // Any copy touching host memory waits: the driver syncs the stream before copying pageable memory.
  return copy_now(dst, src, n, kind, n && !(is_device(dst, n) && is_device(src, n)), "cudaMemcpy");
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind, cudaStream_t s) {
  // Into host memory the host waits; from it, the driver stages the bytes and need not wait.
  if (!queues(s)) return copy_now(dst, src, n, kind, n && !is_device(dst, n), "cudaMemcpyAsync to the host");
  cudaError_t e = check_copy(dst, src, n, kind);
  if (e != cudaSuccess || n == 0) return e;
  // Host memory here is pageable (as a GPU sees malloc'd memory): a copy from it is staged before
  // the call returns, so the caller may reuse its buffer; a copy into it waits for the stream.
  if (!is_device(src, n)) {
    auto staged = std::make_shared<std::vector<char>>(static_cast<const char*>(src), static_cast<const char*>(src) + n);
    enqueue(s, [dst, staged] { std::memcpy(dst, staged->data(), staged->size()); });
  } else if (!is_device(dst, n)) {
    cudaStreamSynchronize(s);
    std::memmove(dst, src, n);
  } else {
    enqueue(s, [dst, src, n] { std::memmove(dst, src, n); });
  }
  return cudaSuccess;
}
cudaError_t cudaMemcpy2D(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width,
                         size_t height, cudaMemcpyKind kind) {
  for (size_t r = 0; r < height; r++) {
    cudaError_t e = cudaMemcpy(static_cast<char*>(dst) + r * dpitch,
                               static_cast<const char*>(src) + r * spitch, width, kind);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}
cudaError_t cudaMemset(void* ptr, int value, size_t n) {
  legacy_stream_point();
  if (n && !is_device(ptr, n)) return set_error(cudaErrorInvalidValue);
  std::memset(ptr, value, n);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t n, cudaStream_t s) {
  if (!queues(s)) return cudaMemset(ptr, value, n);
  if (n && !is_device(ptr, n)) return set_error(cudaErrorInvalidValue);
  enqueue(s, [ptr, value, n] { std::memset(ptr, value, n); });
  return cudaSuccess;
}

cudaError_t cudaGetLastError(void) {
  cudaError_t e = t_last_error;
  t_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError(void) { return t_last_error; }

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    default: return "cudaError (emulated)";
  }
}
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    default: return "unknown error";
  }
}

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : set_error(cudaErrorInvalidDevice); }
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) {
  note_host_wait("cudaDeviceSynchronize");
  synchronize_device();
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device != 0) return set_error(cudaErrorInvalidDevice);
  std::memset(prop, 0, sizeof *prop);
  std::strncpy(prop->name, "SIMT emulator (CPU)", sizeof prop->name - 1);
  prop->totalGlobalMem = size_t(sysconf(_SC_PHYS_PAGES)) * size_t(sysconf(_SC_PAGESIZE));
  prop->sharedMemPerBlock = kDefaultShared;
  prop->sharedMemPerBlockOptin = shared_memory_optin();
  prop->sharedMemPerMultiprocessor = 228 * 1024;
  prop->regsPerBlock = 65536;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  prop->maxThreadsDim[0] = prop->maxThreadsDim[1] = 1024;
  prop->maxThreadsDim[2] = 64;
  prop->maxGridSize[0] = 0x7fffffff;
  prop->maxGridSize[1] = prop->maxGridSize[2] = 65535;
  prop->maxThreadsPerMultiProcessor = 2048;
  prop->multiProcessorCount = lolcats::num_threads();
  prop->major = 9;
  prop->minor = 0;
  prop->l2CacheSize = 0;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  cudaDeviceProp p;
  cudaError_t e = cudaGetDeviceProperties(&p, device);
  if (e != cudaSuccess) return e;
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = p.multiProcessorCount; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = int(p.sharedMemPerBlockOptin); break;
    case cudaDevAttrMaxThreadsPerBlock: *value = p.maxThreadsPerBlock; break;
    case cudaDevAttrComputeCapabilityMajor: *value = p.major; break;
    case cudaDevAttrComputeCapabilityMinor: *value = p.minor; break;
    case cudaDevAttrWarpSize: *value = 32; break;
    default: return set_error(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_b, size_t* total_b) {
  *total_b = size_t(sysconf(_SC_PHYS_PAGES)) * size_t(sysconf(_SC_PAGESIZE));
  *free_b = size_t(sysconf(_SC_AVPHYS_PAGES)) * size_t(sysconf(_SC_PAGESIZE));
  return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaSuccess;
  std::lock_guard<std::mutex> lock(g_mutex);
  if (value < 0 || size_t(value) > g_shared_optin) return set_error(cudaErrorInvalidValue);
  g_shared_limit[func] = size_t(value);
  return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int* v) {
  *v = 0;  // no driver
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = CUDART_VERSION;
  return cudaSuccess;
}

}  // extern "C"
