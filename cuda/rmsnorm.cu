// RMSNorm kernels, then their launchers (math in cuda/rmsnorm.h and tensor/rmsnorm.h).
//
// Row ops (forward, dx) give each row to one warp: its lanes stride over the C channels (adjacent
// lanes read adjacent values: coalesced), and the row's sum is a butterfly of shuffles, so no
// shared memory and no __syncthreads are needed. The weight gradient sums over all N rows; to stay
// deterministic without float atomics it takes two passes: per-chunk partial sums (chunks of a fixed
// number of rows, so the summation order depends on N alone), then one ordered sum per channel.
#include "cuda/rmsnorm.h"

#include "cuda/common.cuh"

namespace lolcats::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kRowsPerBlock = 8;  // forward and dx: 8 warps (256 threads) per block, a row each
constexpr int kDwCols = 32;       // dw partials: a block covers 32 adjacent channels ...
constexpr int kDwLanesY = 8;      // ... with 8 rows in flight per channel ...
constexpr int kDwChunk = 64;      // ... over a chunk of 64 rows; one partial per (chunk, channel)
constexpr int kFinishThreads = 256;

__device__ inline float warp_sum(float v) {  // every lane gets the sum of the warp's 32 values
  for (int m = kWarp / 2; m > 0; m /= 2) v += __shfl_xor_sync(0xffffffffu, v, m);
  return v;
}

template <typename T>
__global__ void rmsnorm_forward_kernel(T* y, float* rstd, const T* x, const T* w, int N, int C,
                                       float eps) {
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  if (row >= N) return;  // the whole warp leaves: no collective is left waiting
  const T* xr = x + int64_t(row) * C;
  T* yr = y + int64_t(row) * C;
  float ss = 0.0f;
  for (int c = lane; c < C; c += kWarp) {
    float v = to_f32(xr[c]);
    ss += v * v;
  }
  const float r = rsqrtf(warp_sum(ss) / float(C) + eps);
  for (int c = lane; c < C; c += kWarp) yr[c] = from_f32<T>(to_f32(w[c]) * (to_f32(xr[c]) * r));
  if (rstd && lane == 0) rstd[row] = r;
}

template <typename T>
__global__ void rmsnorm_backward_dx_kernel(T* dx, const T* dy, const T* x, const T* w,
                                           const float* rstd, int N, int C) {
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  if (row >= N) return;
  const T* xr = x + int64_t(row) * C;
  const T* gr = dy + int64_t(row) * C;
  T* dxr = dx + int64_t(row) * C;
  const float r = rstd[row];
  float dot = 0.0f;  // sum_c (w_c dy_c) xhat_c
  for (int c = lane; c < C; c += kWarp) dot += (to_f32(w[c]) * to_f32(gr[c])) * (to_f32(xr[c]) * r);
  const float mean_dot = warp_sum(dot) / float(C);
  for (int c = lane; c < C; c += kWarp) {
    float g = to_f32(w[c]) * to_f32(gr[c]);
    dxr[c] = from_f32<T>(r * (g - to_f32(xr[c]) * r * mean_dot));
  }
}

// Block (kDwCols, kDwLanesY), grid (ceil(C / kDwCols), ceil(N / kDwChunk)):
// partial[chunk, c] = sum over the chunk's rows n of dy[n,c] * x[n,c] * rstd[n].
template <typename T>
__global__ void rmsnorm_dw_partial_kernel(float* partial, const T* dy, const T* x,
                                          const float* rstd, int N, int C) {
  __shared__ float sums[kDwLanesY][kDwCols];
  const int c = blockIdx.x * kDwCols + threadIdx.x;
  const int n0 = blockIdx.y * kDwChunk, n1 = n0 + kDwChunk < N ? n0 + kDwChunk : N;
  float s = 0.0f;
  if (c < C)
    for (int n = n0 + threadIdx.y; n < n1; n += kDwLanesY) {
      int64_t i = int64_t(n) * C + c;
      s += to_f32(dy[i]) * (to_f32(x[i]) * rstd[n]);
    }
  sums[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float t = 0.0f;
    for (int k = 0; k < kDwLanesY; k++) t += sums[k][threadIdx.x];
    partial[int64_t(blockIdx.y) * C + c] = t;
  }
}

// One thread per channel: dw[c] += the chunks' partials, summed in chunk order.
__global__ void rmsnorm_dw_finish_kernel(float* dw, const float* partial, int chunks, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float s = 0.0f;
  for (int k = 0; k < chunks; k++) s += partial[int64_t(k) * C + c];
  dw[c] += s;
}

}  // namespace

template <typename T>
void rmsnorm_forward(T* y, float* rstd, const T* x, const T* w, int N, int C, float eps,
                     Stream stream) {
  ENSURE(N >= 0 && C > 0, "rmsnorm_forward: bad sizes N=%d C=%d", N, C);
  if (N == 0) return;
  launch_kernel(rmsnorm_forward_kernel<T>, ceil_div(N, kRowsPerBlock), kRowsPerBlock * kWarp, 0,
                stream, y, rstd, x, w, N, C, eps);
}

template <typename T>
void rmsnorm_backward(T* dx, float* dw, const T* dy, const T* x, const T* w, const float* rstd,
                      int N, int C, Stream stream) {
  ENSURE(N >= 0 && C > 0, "rmsnorm_backward: bad sizes N=%d C=%d", N, C);
  if (N == 0) return;
  if (dx)
    launch_kernel(rmsnorm_backward_dx_kernel<T>, ceil_div(N, kRowsPerBlock), kRowsPerBlock * kWarp,
                  0, stream, dx, dy, x, w, rstd, N, C);
  if (dw) {
    const int chunks = ceil_div(N, kDwChunk);
    ENSURE(chunks <= 65535, "rmsnorm_backward: N=%d rows exceed the dw kernel's grid", N);
    DeviceScratch<float> partial(size_t(chunks) * size_t(C), stream);  // (chunks, C) partial sums
    launch_kernel(rmsnorm_dw_partial_kernel<T>, dim3(ceil_div(C, kDwCols), chunks),
                  dim3(kDwCols, kDwLanesY), 0, stream, partial.p, dy, x, rstd, N, C);
    launch_kernel(rmsnorm_dw_finish_kernel, ceil_div(C, kFinishThreads), kFinishThreads, 0, stream,
                  dw, partial.p, chunks, C);
  }
}

#define INSTANTIATE(T)                                                                          \
  template void rmsnorm_forward<T>(T*, float*, const T*, const T*, int, int, float, Stream);    \
  template void rmsnorm_backward<T>(T*, float*, const T*, const T*, const T*, const float*, int, \
                                    int, Stream);
INSTANTIATE(float)
INSTANTIATE(bf16)

}  // namespace lolcats::cuda
