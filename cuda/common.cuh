// Included first by every CUDA source. It picks the real CUDA toolkit (nvcc) or the SIMT emulator
// (g++, LOLCATS_CUDA_EMU: see cuda/emu/emu.h), so one .cu file serves both builds, and holds the
// error macros and the launch macro that hide the difference.
#pragma once
#ifdef LOLCATS_CUDA_EMU
#include "cuda/emu/emu.h"
#else
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#endif
#include <cublasLt.h>

#include "cuda/api.h"
#include "cuda/memory.h"  // device_free_on_stream
#include "tensor/check.h"
#include "tensor/tensor.h"  // device_malloc / device_free

// Each runtime or cuBLASLt call is wrapped: a failure throws lolcats::Error with the file, line and
// the library's own message (never a silent status).
#define cudaCheck(call)                                                                  \
  do {                                                                                   \
    cudaError_t err_ = (call);                                                           \
    if (err_ != cudaSuccess)                                                             \
      ::lolcats::fail(__FILE__, __LINE__,                                                \
                      ::lolcats::strfmt("CUDA error %s: %s", cudaGetErrorName(err_),     \
                                        cudaGetErrorString(err_)));                      \
  } while (0)

#define cublasCheck(call)                                                                \
  do {                                                                                   \
    cublasStatus_t st_ = (call);                                                         \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                                    \
      ::lolcats::fail(__FILE__, __LINE__,                                                \
                      ::lolcats::strfmt("cuBLAS error %d: %s", int(st_),                 \
                                        cublasLtGetStatusString(st_)));                  \
  } while (0)

// launch_kernel(kernel, grid, block, shared_bytes, stream, args...) is
// kernel<<<grid, block, shared_bytes, stream>>>(args...) followed by a check of the launch. A
// template kernel with several parameters goes through a variable first (the macro splits on
// commas): `auto* k = flash_forward<64, 128>; launch_kernel(k, ...)`.
#ifdef LOLCATS_CUDA_EMU
#define launch_kernel(kernel, grid, block, shared, stream, ...) \
  cudaCheck(::lolcats::emu::launch(#kernel, kernel, grid, block, shared, stream, ##__VA_ARGS__))
// Dynamic shared memory: `EXTERN_SHARED(float, buf);` declares `buf` as this block's bytes.
#define EXTERN_SHARED(type, name) type* name = reinterpret_cast<type*>(::lolcats::emu::dynamic_shared())
#else
#define launch_kernel(kernel, grid, block, shared, stream, ...) \
  do {                                                          \
    kernel<<<grid, block, shared, stream>>>(__VA_ARGS__);       \
    cudaCheck(cudaGetLastError());                              \
  } while (0)
#define EXTERN_SHARED(type, name)                                    \
  extern __shared__ __align__(16) unsigned char lolcats_dynamic_smem_[]; \
  type* name = reinterpret_cast<type*>(lolcats_dynamic_smem_)
#endif

typedef __nv_bfloat16 bf16;

// Scratch device memory for one launcher call, from the tensors' caching allocator
// (lolcats::device_malloc, cuda/memory.cu): after the first call no cudaMalloc, and no cudaFree
// that would wait for the device.
//
// The stream rule (cuda/README.md, "Streams and scratch memory"): scratch is freed at the end of
// the launcher call, before the kernels that use it have run, so its lifetime is tied to the
// stream those kernels were queued on. Pass the launcher's stream, and launch every kernel that
// touches the scratch on that stream. The destructor hands the block back with
// device_free_on_stream: on the legacy default stream it may be reused at once (whoever gets it
// next queues work behind ours); on any other stream only once an event recorded there at the
// free has completed.
template <typename T>
struct DeviceScratch {
  T* p;
  lolcats::cuda::Stream stream;
  DeviceScratch(size_t count, lolcats::cuda::Stream s)
      : p(static_cast<T*>(lolcats::device_malloc(count * sizeof(T)))), stream(s) {}
  ~DeviceScratch() { lolcats::device_free_on_stream(p, stream); }
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;
};

// Storage type <-> f32 (all arithmetic is f32): kernels are templates over the storage type T,
// float or bf16, and convert at each load and store.
__host__ __device__ inline float to_f32(float x) { return x; }
__host__ __device__ inline float to_f32(bf16 x) { return __bfloat162float(x); }
template <typename T>
__host__ __device__ inline T from_f32(float x);
template <>
__host__ __device__ inline float from_f32<float>(float x) { return x; }
template <>
__host__ __device__ inline bf16 from_f32<bf16>(float x) { return __float2bfloat16(x); }

// Integer ceiling division, for grid sizes.
__host__ __device__ inline constexpr int ceil_div(int a, int b) { return (a + b - 1) / b; }
