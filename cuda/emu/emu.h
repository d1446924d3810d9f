// SIMT emulation: the CUDA programming model on the CPU, so that every kernel in cuda/ runs in
// `make test` on a machine without a GPU, from the same .cu source that nvcc compiles for the GPU.
//
// How it works (details in cuda/emu/scheduler.cpp):
//   * A launch runs the grid's blocks one after another on each OS thread (blocks are spread over
//     the OpenMP threads). Inside a block, every CUDA thread is a fiber: a stack of its own and a
//     hand-written x86-64 context switch. A scheduler runs each runnable fiber until it blocks.
//   * __syncthreads() completes when every live thread of the block waits at the same call site;
//     a thread that exited, or waits at another site, is reported with block and thread indices
//     instead of hanging. Warp collectives (__shfl_*_sync, __ballot_sync, __any/__all_sync,
//     __syncwarp) complete when every lane named in the mask has arrived, with PTX's shfl rules.
//   * Threads of a warp do NOT run in lock-step here (each runs until it blocks), so warp-synchronous
//     code that lacks __syncwarp gets wrong answers here too, as it may on a GPU.
//   * Static __shared__ arrays are `static thread_local` (one OS thread runs one block at a time);
//     dynamic shared memory is declared with EXTERN_SHARED (cuda/common.cuh) and is poisoned with
//     0xFF bytes (a NaN in floats) at the start of every block.
//   * Device memory is host memory from cudaMalloc (cuda/emu/runtime.cpp), poisoned with 0xFF.
//
// What it cannot show (the GPU must): races between blocks, missing memory fences, FMA contraction
// differences, timing. Inline PTX, wgmma, TMA, mbarrier and clusters are not emulated: such fast
// paths sit under `#ifdef __CUDA_ARCH__` beside a portable kernel that this emulator tests. The
// exceptions are the warp-level matrix primitives of cuda/mma.cuh (mma.sync, ldmatrix, cp.async),
// which are emulated exactly as the PTX ISA defines them (warp_matrix and cp_async below).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "cuda/emu/streams.h"

// The CUDA headers define __shared__ etc. as nothing for a host compiler; give them their meaning.
#undef __shared__
#define __shared__ static thread_local
#undef __launch_bounds__
#define __launch_bounds__(...)
#undef __constant__
#define __constant__

namespace lolcats::emu {

// ---- what a kernel sees ---------------------------------------------------------------------------
struct BlockContext {
  uint3 block_idx;
  dim3 block_dim, grid_dim;
  char* dynamic_shared;  // this block's dynamic shared memory (EXTERN_SHARED)
};
struct FiberIndex {  // the first members of a Fiber: what threadIdx reads
  uint3 thread_idx;
};

}  // namespace lolcats::emu

// Plain __thread pointers (not C++ thread_local objects): reading them is one TLS load, with no
// initialisation guard on every threadIdx access.
extern __thread lolcats::emu::FiberIndex* lolcats_emu_fiber;
extern __thread lolcats::emu::BlockContext* lolcats_emu_block;

#define threadIdx (lolcats_emu_fiber->thread_idx)
#define blockIdx (lolcats_emu_block->block_idx)
#define blockDim (lolcats_emu_block->block_dim)
#define gridDim (lolcats_emu_block->grid_dim)
constexpr int warpSize = 32;

namespace lolcats::emu {

// ---- block-wide and warp-wide synchronisation (cuda/emu/scheduler.cpp) ----------------------------
void syncthreads(const char* file, int line);

enum class Collective : int { shfl_idx, shfl_up, shfl_down, shfl_xor, ballot, any, all, syncwarp, matrix };
// Arrives at a warp collective with this lane's 64-bit payload; returns this lane's result.
uint64_t warp_collective(Collective kind, unsigned mask, uint64_t value, int arg, int width,
                         const char* file, int line);

template <typename T>
T shfl(Collective kind, unsigned mask, T var, int arg, int width, const char* file, int line) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffle of a type > 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &var, sizeof(T));
  bits = warp_collective(kind, mask, bits, arg, width, file, line);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

char* dynamic_shared();  // this block's dynamic shared memory

// ---- warp-wide matrix instructions (mma.sync, ldmatrix: cuda/mma.cuh, cuda/emu/matrix.cpp) ---------
// Every lane of a full warp arrives with a pointer to its own operands and results; when the last
// lane arrives, `compute` sees all 32 lanes' pointers at once (lanes[l] is lane l's), writes every
// lane's results, and returns an error message or "" (the emulator then reports it as a fault).
// Like the shuffles: divergence (a lane at another collective, a lane that exited, a block whose
// last warp has fewer than 32 threads) is an error, and no lane runs on before the result exists.
using WarpMatrixFn = std::string (*)(void* const lanes[32]);
void warp_matrix(const char* op, WarpMatrixFn compute, void* lane_data, const char* file, int line);

// ---- cp.async (cuda/mma.cuh) ----------------------------------------------------------------------
// The copy is recorded in the calling thread's pending list and performed only at the
// cp.async.wait_group that covers its group: until then the destination holds what it held (the
// 0xFF poison of dynamic shared memory), so a kernel that forgets the wait reads the poison.
// commit closes the thread's open group; wait(n) performs every committed group but the n most
// recent. Copies never waited for are dropped when the thread exits.
void cp_async(void* dst, const void* src, int bytes, const char* file, int line);
void cp_async_commit();
void cp_async_wait(int n);

// ---- launching ------------------------------------------------------------------------------------
struct Launch {
  const char* name;  // the kernel's name, for error messages
  const void* func;  // the kernel, for cudaFuncSetAttribute limits
  dim3 grid, block;
  size_t shared_bytes;
  void (*body)(void* ctx);  // calls the kernel with its arguments
  void* ctx;
};
// Runs every block; returns the CUDA error a real launch would report for a bad configuration, or
// throws lolcats::Error for a fault inside the kernel (divergent barrier, deadlock, bad shuffle).
cudaError_t run_grid(const Launch& launch);

// A launch runs at once, unless a test turned on asynchronous streams (cuda/emu/streams.h) and
// `stream` is not the legacy stream: then it is queued on the stream, with its own copy of the
// parameters, as a GPU queues it.
template <typename... P, typename... A>
cudaError_t launch(const char* name, void (*kernel)(P...), dim3 grid, dim3 block, size_t shared,
                   cudaStream_t stream, A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong number of arguments");
  note_launch(name);
  // Each thread gets its own copy of the parameters, converted as a real launch converts them.
  struct Call {
    void (*kernel)(P...);
    std::tuple<std::decay_t<P>...> params;
  };
  auto make_launch = [&](Call* call) {
    return Launch{name,  reinterpret_cast<const void*>(kernel), grid, block, shared,
                  [](void* ctx) {
                    auto* c = static_cast<Call*>(ctx);
                    std::apply(c->kernel, c->params);  // copies the parameters for this thread
                  },
                  call};
  };
  if (queues(stream)) {
    auto call = std::make_shared<Call>(
        Call{kernel, std::tuple<std::decay_t<P>...>(std::decay_t<P>(std::forward<A>(args))...)});
    return enqueue_launch(stream, make_launch(call.get()), call);
  }
  legacy_stream_point();  // the legacy stream waits for the blocking streams' queued work
  Call call{kernel, std::tuple<std::decay_t<P>...>(std::decay_t<P>(std::forward<A>(args))...)};
  return run_grid(make_launch(&call));
}

// cuda_runtime.h offers this overload to nvcc only.
}  // namespace lolcats::emu
template <typename T>
inline cudaError_t cudaFuncSetAttribute(T* kernel, cudaFuncAttribute attr, int value) {
  return ::cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), attr, value);
}
namespace lolcats::emu {

// ---- atomics: blocks run on several OS threads, so these are real atomic operations ---------------
template <typename T>
T atomic_update(T* addr, T (*op)(T, T), T val) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8, "atomics on 4- and 8-byte types");
  using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  Bits* p = reinterpret_cast<Bits*>(addr);
  Bits old_bits = __atomic_load_n(p, __ATOMIC_RELAXED);
  for (;;) {
    T old_val, new_val;
    std::memcpy(&old_val, &old_bits, sizeof(T));
    new_val = op(old_val, val);
    Bits new_bits;
    std::memcpy(&new_bits, &new_val, sizeof(T));
    if (__atomic_compare_exchange_n(p, &old_bits, new_bits, false, __ATOMIC_RELAXED,
                                    __ATOMIC_RELAXED))
      return old_val;
  }
}

}  // namespace lolcats::emu

// ---- the CUDA device API, as used by our kernels --------------------------------------------------
#define __syncthreads() ::lolcats::emu::syncthreads(__FILE__, __LINE__)
#define __syncwarp(...) \
  ((void)::lolcats::emu::warp_collective(::lolcats::emu::Collective::syncwarp, \
                                         ::lolcats::emu::syncwarp_mask(__VA_ARGS__), 0, 0, 32, __FILE__, __LINE__))
#define LOLCATS_EMU_SHFL(kind, mask, var, arg, ...) \
  ::lolcats::emu::shfl(::lolcats::emu::Collective::kind, mask, var, arg, \
                       ::lolcats::emu::shfl_width(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_sync(mask, var, lane, ...) LOLCATS_EMU_SHFL(shfl_idx, mask, var, lane, __VA_ARGS__)
#define __shfl_up_sync(mask, var, d, ...) LOLCATS_EMU_SHFL(shfl_up, mask, var, d, __VA_ARGS__)
#define __shfl_down_sync(mask, var, d, ...) LOLCATS_EMU_SHFL(shfl_down, mask, var, d, __VA_ARGS__)
#define __shfl_xor_sync(mask, var, m, ...) LOLCATS_EMU_SHFL(shfl_xor, mask, var, m, __VA_ARGS__)
#define __ballot_sync(mask, pred)                                                              \
  unsigned(::lolcats::emu::warp_collective(::lolcats::emu::Collective::ballot, mask, !!(pred), \
                                           0, 32, __FILE__, __LINE__))
#define __any_sync(mask, pred)                                                              \
  int(::lolcats::emu::warp_collective(::lolcats::emu::Collective::any, mask, !!(pred), 0, 32, \
                                      __FILE__, __LINE__))
#define __all_sync(mask, pred)                                                              \
  int(::lolcats::emu::warp_collective(::lolcats::emu::Collective::all, mask, !!(pred), 0, 32, \
                                      __FILE__, __LINE__))

namespace lolcats::emu {
inline unsigned syncwarp_mask(unsigned mask = 0xffffffffu) { return mask; }
inline int shfl_width(int width = 32) { return width; }
}  // namespace lolcats::emu

inline float atomicAdd(float* a, float v) {
  return lolcats::emu::atomic_update<float>(a, [](float x, float y) { return x + y; }, v);
}
inline double atomicAdd(double* a, double v) {
  return lolcats::emu::atomic_update<double>(a, [](double x, double y) { return x + y; }, v);
}
inline int atomicAdd(int* a, int v) { return __atomic_fetch_add(a, v, __ATOMIC_RELAXED); }
inline unsigned atomicAdd(unsigned* a, unsigned v) { return __atomic_fetch_add(a, v, __ATOMIC_RELAXED); }
inline unsigned long long atomicAdd(unsigned long long* a, unsigned long long v) {
  return __atomic_fetch_add(a, v, __ATOMIC_RELAXED);
}
inline int atomicMax(int* a, int v) {
  return lolcats::emu::atomic_update<int>(a, [](int x, int y) { return x > y ? x : y; }, v);
}
inline float atomicMaxFloat(float* a, float v) {  // not CUDA API; see cuda/common.cuh
  return lolcats::emu::atomic_update<float>(a, [](float x, float y) { return x > y ? x : y; }, v);
}
inline int atomicMin(int* a, int v) {
  return lolcats::emu::atomic_update<int>(a, [](int x, int y) { return x < y ? x : y; }, v);
}
inline int atomicExch(int* a, int v) { return __atomic_exchange_n(a, v, __ATOMIC_RELAXED); }
inline int atomicCAS(int* a, int cmp, int v) {
  __atomic_compare_exchange_n(a, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return cmp;
}
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

// Device math functions that the host library lacks (the fast-math intrinsics round like the
// accurate ones here: the GPU's differ by a few ulp, which the kernel tests' tolerances allow).
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __powf(float x, float y) { return std::pow(x, y); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
// The explicitly rounded operations: IEEE round-to-nearest, which host arithmetic is, and never
// contracted into an FMA (what they exist for on the GPU). -ffp-contract cannot merge across calls.
[[gnu::noinline]] inline float __fmul_rn(float a, float b) { return a * b; }
[[gnu::noinline]] inline float __fadd_rn(float a, float b) { return a + b; }
[[gnu::noinline]] inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
// CUDA's device min/max overloads (the host library has none for these types).
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline int __float_as_int(float x) { int i; std::memcpy(&i, &x, 4); return i; }
inline float __int_as_float(int i) { float x; std::memcpy(&x, &i, 4); return x; }
inline unsigned __float_as_uint(float x) { unsigned i; std::memcpy(&i, &x, 4); return i; }
inline float __uint_as_float(unsigned i) { float x; std::memcpy(&x, &i, 4); return x; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __ffs(unsigned x) { return __builtin_ffs(int(x)); }
inline int __clz(unsigned x) { return x ? __builtin_clz(x) : 32; }
template <typename T>
inline T __ldg(const T* p) { return *p; }
// expf, fmaxf, sqrtf, ... come from <cmath> (the C library's global names).
