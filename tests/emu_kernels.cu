// Small kernels that exercise the CUDA programming model itself: barriers, shared memory, warp
// collectives, atomics, 3-D blocks. tests/test_emu.cpp runs them and checks the results against the
// CUDA documentation's description of each primitive. The same file compiles with nvcc, so on a GPU
// the hardware answers the same questions (the faulty kernels run only under the emulator: on a GPU
// they would hang or be undefined).
#include "cuda/common.cuh"
#include "tests/emu_kernels.h"

namespace {

// Sum of x[0..n) per block by a shared-memory tree; blockDim.x is a power of two.
__global__ void block_sum(float* out, const float* x, int n) {
  __shared__ float buf[1024];
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  buf[threadIdx.x] = i < n ? x[i] : 0.0f;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) buf[threadIdx.x] += buf[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = buf[0];
}

// The same tree with its barriers missing: correct only if threads happen to run in order.
__global__ void block_sum_no_barrier(float* out, const float* x, int n) {
  __shared__ float buf[1024];
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  buf[threadIdx.x] = i < n ? x[i] : 0.0f;
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2)
    if (threadIdx.x < stride) buf[threadIdx.x] += buf[threadIdx.x + stride];
  if (threadIdx.x == 0) out[blockIdx.x] = buf[0];
}

// out[lane] = the shuffle's result for the value 100 * lane + 7.
__global__ void shuffle(int* out, int kind, int arg, int width) {
  int lane = threadIdx.x, v = 100 * lane + 7, r = 0;
  switch (kind) {
    case 0: r = __shfl_sync(0xffffffffu, v, arg, width); break;
    case 1: r = __shfl_up_sync(0xffffffffu, v, unsigned(arg), width); break;
    case 2: r = __shfl_down_sync(0xffffffffu, v, unsigned(arg), width); break;
    case 3: r = __shfl_xor_sync(0xffffffffu, v, arg, width); break;
  }
  out[lane] = r;
}

// Warp sum by butterfly, the pattern every reduction kernel uses, on floats and doubles.
__global__ void warp_sums(float* out_f, double* out_d) {
  float f = float(threadIdx.x) + 0.5f;
  double d = double(threadIdx.x) * 1e10 + 1.0;
  for (int m = 16; m > 0; m /= 2) {
    f += __shfl_xor_sync(0xffffffffu, f, m);
    d += __shfl_xor_sync(0xffffffffu, d, m);
  }
  out_f[threadIdx.x] = f;
  out_d[threadIdx.x] = d;
}

// The even lanes of each warp vote among themselves (a partial mask); odd lanes skip the vote.
__global__ void votes(unsigned* ballot, int* any, int* all, const int* pred) {
  int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (threadIdx.x % 2 == 0) {
    unsigned even = 0x55555555u;
    ballot[t] = __ballot_sync(even, pred[t]);
    any[t] = __any_sync(even, pred[t]);
    all[t] = __all_sync(even, pred[t]);
  }
}

// A (8, 4, 2) block: out[linear] = the lane of each thread and __ballot of threadIdx.y == 1.
__global__ void block_3d(int* linear_of, unsigned* ballot_y1) {
  int linear = threadIdx.x + threadIdx.y * blockDim.x + threadIdx.z * blockDim.x * blockDim.y;
  int block = blockIdx.x + blockIdx.y * gridDim.x + blockIdx.z * gridDim.x * gridDim.y;
  int base = block * blockDim.x * blockDim.y * blockDim.z;
  linear_of[base + linear] = linear;
  ballot_y1[base + linear] = __ballot_sync(0xffffffffu, threadIdx.y == 1);
}

__global__ void count_atomics(int* counter, float* fsum) {
  atomicAdd(counter, 1);
  atomicAdd(fsum, 1.0f);
}

// Dynamic shared memory: a block reverses its slice through shared memory.
__global__ void reverse_block(float* out, const float* x) {
  EXTERN_SHARED(float, buf);
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  buf[threadIdx.x] = x[i];
  __syncthreads();
  out[i] = buf[blockDim.x - 1 - threadIdx.x];
}

// Uses `floats` floats of dynamic shared memory (to test the launch limits).
__global__ void big_shared(float* out, int floats) {
  EXTERN_SHARED(float, buf);
  for (int i = threadIdx.x; i < floats; i += blockDim.x) buf[i] = 1.0f;
  __syncthreads();
  if (threadIdx.x == 0) {
    float s = 0;
    for (int i = 0; i < floats; i++) s += buf[i];
    out[0] = s;
  }
}

#ifdef LOLCATS_CUDA_EMU
// ---- faulty kernels: the emulator must report them, not hang -------------------------------------
__global__ void divergent_barrier(float* out) {
  if (threadIdx.x < 16) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

__global__ void exit_before_barrier(float* out) {
  if (threadIdx.x == 5) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void shuffle_missing_lane(float* out) {
  if (threadIdx.x == 3) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
}

__global__ void shuffle_mask_without_self(float* out) {
  out[threadIdx.x] = __shfl_sync(0x1u, 1.0f, 0);  // lanes 1..31 are not in their mask
}

__global__ void crash(float* out) {
  if (blockIdx.x == 1 && threadIdx.x == 3) out = nullptr;
  out[threadIdx.x] = 1;
}
#endif

template <typename T>
T* to_device(const std::vector<T>& v) {
  T* p = nullptr;
  cudaCheck(cudaMalloc(&p, v.size() * sizeof(T) + 1));
  cudaCheck(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return p;
}
template <typename T>
std::vector<T> from_device(const T* p, size_t n) {
  std::vector<T> v(n);
  cudaCheck(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
  return v;
}

}  // namespace

namespace emu_test {

std::vector<float> run_block_sum(const std::vector<float>& x, int block, bool with_barriers) {
  int n = int(x.size()), blocks = ceil_div(n, block);
  float* dx = to_device(x);
  float* dout = to_device(std::vector<float>(size_t(blocks)));
  if (with_barriers) launch_kernel(block_sum, blocks, block, 0, 0, dout, dx, n);
  else launch_kernel(block_sum_no_barrier, blocks, block, 0, 0, dout, dx, n);
  std::vector<float> out = from_device(dout, size_t(blocks));
  cudaFree(dx);
  cudaFree(dout);
  return out;
}

std::vector<int> run_shuffle(int kind, int arg, int width) {
  int* d = to_device(std::vector<int>(32));
  launch_kernel(shuffle, 1, 32, 0, 0, d, kind, arg, width);
  std::vector<int> out = from_device(d, 32);
  cudaFree(d);
  return out;
}

void run_warp_sums(std::vector<float>& f, std::vector<double>& d) {
  float* df = to_device(std::vector<float>(32));
  double* dd = to_device(std::vector<double>(32));
  launch_kernel(warp_sums, 1, 32, 0, 0, df, dd);
  f = from_device(df, 32);
  d = from_device(dd, 32);
  cudaFree(df);
  cudaFree(dd);
}

void run_votes(const std::vector<int>& pred, std::vector<unsigned>& ballot, std::vector<int>& any,
               std::vector<int>& all) {
  size_t n = pred.size();
  int* dp = to_device(pred);
  unsigned* db = to_device(std::vector<unsigned>(n));
  int* da = to_device(std::vector<int>(n));
  int* dl = to_device(std::vector<int>(n));
  launch_kernel(votes, int(n / 64), 64, 0, 0, db, da, dl, dp);
  ballot = from_device(db, n);
  any = from_device(da, n);
  all = from_device(dl, n);
  cudaFree(dp);
  cudaFree(db);
  cudaFree(da);
  cudaFree(dl);
}

void run_block_3d(std::vector<int>& linear, std::vector<unsigned>& ballot) {
  size_t n = 8 * 4 * 2 * 6;  // blocks (3, 2, 1)
  int* dl = to_device(std::vector<int>(n));
  unsigned* db = to_device(std::vector<unsigned>(n));
  launch_kernel(block_3d, dim3(3, 2, 1), dim3(8, 4, 2), 0, 0, dl, db);
  linear = from_device(dl, n);
  ballot = from_device(db, n);
  cudaFree(dl);
  cudaFree(db);
}

void run_atomics(int blocks, int threads, int& count, float& fsum) {
  int* dc = to_device(std::vector<int>(1, 0));
  float* df = to_device(std::vector<float>(1, 0.0f));
  launch_kernel(count_atomics, blocks, threads, 0, 0, dc, df);
  count = from_device(dc, 1)[0];
  fsum = from_device(df, 1)[0];
  cudaFree(dc);
  cudaFree(df);
}

std::vector<float> run_reverse_blocks(const std::vector<float>& x, int block) {
  float* dx = to_device(x);
  float* dout = to_device(std::vector<float>(x.size()));
  launch_kernel(reverse_block, int(x.size()) / block, block, block * sizeof(float), 0, dout, dx);
  std::vector<float> out = from_device(dout, x.size());
  cudaFree(dx);
  cudaFree(dout);
  return out;
}

float run_big_shared(int floats, bool raise_limit) {
  if (raise_limit)
    cudaCheck(cudaFuncSetAttribute(big_shared, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   int(floats * sizeof(float))));
  float* d = to_device(std::vector<float>(1));
  struct Free {
    float* p;
    ~Free() { cudaFree(p); }
  } guard{d};  // the launch may throw (too much shared memory)
  launch_kernel(big_shared, 1, 128, floats * sizeof(float), 0, d, floats);
  return from_device(d, 1)[0];
}

size_t shared_optin_reported(bool from_properties) {
  if (from_properties) {
    cudaDeviceProp prop;
    cudaCheck(cudaGetDeviceProperties(&prop, 0));
    return prop.sharedMemPerBlockOptin;
  }
  int bytes = 0;
  cudaCheck(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0));
  return size_t(bytes);
}

void run_faulty(Faulty which) {
#ifdef LOLCATS_CUDA_EMU
  float* d = to_device(std::vector<float>(128));
  struct Free {
    float* p;
    ~Free() { cudaFree(p); }
  } guard{d};
  switch (which) {
    case Faulty::divergent_barrier: launch_kernel(divergent_barrier, 1, 64, 0, 0, d); break;
    case Faulty::exit_before_barrier: launch_kernel(exit_before_barrier, 1, 64, 0, 0, d); break;
    case Faulty::shuffle_missing_lane: launch_kernel(shuffle_missing_lane, 1, 32, 0, 0, d); break;
    case Faulty::shuffle_mask_without_self: launch_kernel(shuffle_mask_without_self, 1, 32, 0, 0, d); break;
    case Faulty::crash: launch_kernel(crash, 2, 32, 0, 0, d); break;
  }
#else
  (void)which;
#endif
}

}  // namespace emu_test
