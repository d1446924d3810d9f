// MSE kernels, then their launchers (math in cuda/mse.h and tensor/loss.h).
//
// forward, two passes: (1) a grid-stride loop where each thread sums its squared differences, a
// block reduction (warp shuffles, then one warp over the warps' sums) writing partial[block];
// (2) one block sums the partials, in block order, and divides by n. The grid size depends on n
// alone, so the summation order, hence the result's bits, does too.
// backward: elementwise, grid-stride.
#include "cuda/mse.h"

#include "cuda/common.cuh"

namespace lolcats::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kThreads = 256;
constexpr int kMaxBlocks = 1024;  // partial sums in the first pass (~8 blocks per H100 SM)

int blocks_for(int64_t n) {
  const int64_t needed = (n + kThreads - 1) / kThreads;
  return int(needed < kMaxBlocks ? needed : kMaxBlocks);
}

__device__ inline float warp_sum(float v) {  // every lane gets the sum of the warp's 32 values
  for (int m = kWarp / 2; m > 0; m /= 2) v += __shfl_xor_sync(0xffffffffu, v, m);
  return v;
}

// Sum of v over the block (blockDim.x a multiple of 32), valid in thread 0. Once per kernel.
__device__ inline float block_sum(float v) {
  __shared__ float warp_sums[kWarp];
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  v = warp_sum(v);
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  v = 0.0f;
  if (warp == 0) v = warp_sum(lane < blockDim.x / kWarp ? warp_sums[lane] : 0.0f);
  return v;
}

template <typename T>
__global__ void mse_partial_kernel(float* partial, const T* a, const T* b, int64_t n) {
  float s = 0.0f;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float d = to_f32(a[i]) - to_f32(b[i]);
    s += d * d;
  }
  s = block_sum(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void mse_finish_kernel(float* loss, const float* partial, int blocks, int64_t n) {
  float s = 0.0f;
  for (int k = threadIdx.x; k < blocks; k += blockDim.x) s += partial[k];
  s = block_sum(s);
  if (threadIdx.x == 0) *loss = float(double(s) / double(n));  // n may exceed 2^24
}

template <typename T>
__global__ void mse_backward_kernel(T* da, T* db, float g, const T* a, const T* b, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float d = g * (to_f32(a[i]) - to_f32(b[i]));
    if (da) da[i] = from_f32<T>(d);
    if (db) db[i] = from_f32<T>(-d);
  }
}

}  // namespace

template <typename T>
void mse_forward(float* loss, const T* a, const T* b, int64_t n, Stream stream) {
  ENSURE(n >= 0, "mse_forward: bad size n=%lld", (long long)n);
  if (n == 0) {  // as the CPU twin: an empty mean is 0
    cudaCheck(cudaMemsetAsync(loss, 0, sizeof(float), stream));
    return;
  }
  const int blocks = blocks_for(n);
  DeviceScratch<float> partial(static_cast<size_t>(blocks), stream);  // the per-block partial sums
  launch_kernel(mse_partial_kernel<T>, blocks, kThreads, 0, stream, partial.p, a, b, n);
  launch_kernel(mse_finish_kernel, 1, kThreads, 0, stream, loss, partial.p, blocks, n);
}

template <typename T>
void mse_backward(T* da, T* db, float dloss, const T* a, const T* b, int64_t n, Stream stream) {
  ENSURE(n >= 0, "mse_backward: bad size n=%lld", (long long)n);
  if (n == 0 || (!da && !db)) return;
  const float g = float(2.0 * double(dloss) / double(n));  // as the CPU twin: 2 dloss / n
  launch_kernel(mse_backward_kernel<T>, blocks_for(n), kThreads, 0, stream, da, db, g, a, b, n);
}

#define INSTANTIATE(T)                                                                  \
  template void mse_forward<T>(float*, const T*, const T*, int64_t, Stream);            \
  template void mse_backward<T>(T*, T*, float, const T*, const T*, int64_t, Stream);
INSTANTIATE(float)
INSTANTIATE(bf16)

}  // namespace lolcats::cuda
