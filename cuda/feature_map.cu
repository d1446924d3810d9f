// LoLCATs feature maps on CUDA: kernels, then launchers (math in lolcats/feature_map.h, layout in
// cuda/feature_map.h). The steps are the CPU code's, with every head's product in one call:
//   forward:  xg[h] = x[:, h / G] (gather: each of the H maps gets its own copy of its input head)
//             z = xg W, one strided-batched gemm over the H heads;  phi = softmax pair (or relu(z + b))
//   backward: dz = the softmax pair's (or relu's) backward;  dW += xg^T dz (one batched gemm);
//             dxg = dz W^T (one batched gemm);  dx[:, j] = sum over the group g of dxg[j G + g]
//             (the scatter, g in order)
// z and dz are (H, rows, Fw) f32 scratch, rows = B T_, Fw = Fh (Hedgehog) or F (T2R); xg and dxg
// (H, rows, D) f32. With GQA (H maps over Hx < H heads of x, G = H / Hx) the copies cost H rows D
// floats (16 MiB at 8B's T = 1024) and save H - 1 launches of cuBLASLt per product.
#include "cuda/feature_map.h"

#include <cmath>
#include <cstdint>

#include "cuda/common.cuh"
#include "cuda/gemm.h"

namespace lolcats::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 2048;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr float kClamp = 1e-12f;  // lolcats::kFeatureClamp

#define GRID_STRIDE_LOOP(i, n) \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

int blocks_for(int64_t n) {
  const int64_t needed = (n + kThreads - 1) / kThreads;
  return int(needed < kMaxBlocks ? needed : kMaxBlocks);
}

// xg (H, rows, D) f32  <-  x (rows, Hx, D): map h reads head h / G of x.
template <typename T>
__global__ void gather_heads_kernel(float* xg, const T* x, int64_t rows, int H, int Hx, int D) {
  const int G = H / Hx;
  GRID_STRIDE_LOOP(e, int64_t(H) * rows * D) {
    const int h = int(e / (rows * D));
    const int64_t r = e / D % rows;
    const int d = int(e % D);
    xg[e] = to_f32(x[(r * Hx + h / G) * D + d]);
  }
}
// dx (rows, Hx, D) in T  <-  the sum over each head's group of dxg (H, rows, D), g = 0, 1, ... in
// order (deterministic), rounded once.
template <typename T>
__global__ void scatter_heads_kernel(T* x, const float* xg, int64_t rows, int H, int Hx, int D) {
  const int G = H / Hx;
  GRID_STRIDE_LOOP(e, rows * Hx * D) {
    const int64_t r = e / (int64_t(Hx) * D);
    const int hx = int(e / D % Hx), d = int(e % D);
    float s = 0.f;
    for (int g = 0; g < G; g++) s += xg[((int64_t(hx) * G + g) * rows + r) * D + d];
    x[e] = from_f32<T>(s);
  }
}

__device__ inline float warp_sum(float x) {
  for (int off = 16; off > 0; off /= 2) x += __shfl_xor_sync(kFullMask, x, off);
  return x;
}
__device__ inline float warp_max(float x) {
  for (int off = 16; off > 0; off /= 2) x = fmaxf(x, __shfl_xor_sync(kFullMask, x, off));
  return x;
}

// One warp per (row r, head h): phi[r, h] = [softmax(z), softmax(-z)], clamped below at 1e-12,
// with z = z[h, r] (Fh). Lane l owns features l, l + 32, ...
__global__ void softmax_pair_kernel(float* phi, const float* z, int64_t rows, int H, int Fh) {
  const int64_t w = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (w >= rows * H) return;  // whole warps leave together
  const int64_t r = w / H;
  const int h = int(w % H);
  const float* zr = z + (h * rows + r) * Fh;
  float* out = phi + w * 2 * Fh;
  float zmax = -INFINITY, zmin = INFINITY;
  for (int f = lane; f < Fh; f += 32) zmax = fmaxf(zmax, zr[f]), zmin = fminf(zmin, zr[f]);
  zmax = warp_max(zmax);
  zmin = -warp_max(-zmin);
  float s1 = 0.f, s2 = 0.f;
  for (int f = lane; f < Fh; f += 32) {
    s1 += (out[f] = expf(zr[f] - zmax));
    s2 += (out[Fh + f] = expf(zmin - zr[f]));
  }
  s1 = warp_sum(s1);
  s2 = warp_sum(s2);
  for (int f = lane; f < Fh; f += 32) {
    out[f] = fmaxf(out[f] / s1, kClamp);
    out[Fh + f] = fmaxf(out[Fh + f] / s2, kClamp);
  }
}

// The softmax pair's backward, one warp per (r, h): dz = s (ds - <ds, s>) for each half, the second
// entering with a minus sign; clamped entries pass no gradient and count as 0 (as on the CPU).
__global__ void softmax_pair_backward_kernel(float* dz, const float* dphi, const float* phi, int64_t rows, int H,
                                             int Fh) {
  const int64_t w = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (w >= rows * H) return;
  const int64_t r = w / H;
  const int h = int(w % H);
  const float* p = phi + w * 2 * Fh;
  const float* g = dphi + w * 2 * Fh;
  auto live = [&](int f) { return p[f] > kClamp ? g[f] : 0.f; };
  auto prob = [&](int f) { return p[f] > kClamp ? p[f] : 0.f; };
  float dot1 = 0.f, dot2 = 0.f;
  for (int f = lane; f < Fh; f += 32) dot1 += live(f) * p[f], dot2 += live(Fh + f) * p[Fh + f];
  dot1 = warp_sum(dot1);
  dot2 = warp_sum(dot2);
  float* out = dz + (h * rows + r) * Fh;
  for (int f = lane; f < Fh; f += 32) out[f] = prob(f) * (live(f) - dot1) - prob(Fh + f) * (live(Fh + f) - dot2);
}

// T2R: phi[r, h, f] = relu(z[h, r, f] + bias[h, f]).
__global__ void bias_relu_kernel(float* phi, const float* z, const float* bias, int64_t rows, int H, int F) {
  GRID_STRIDE_LOOP(e, rows * H * F) {
    int64_t r = e / (int64_t(H) * F);
    int h = int(e / F % H), f = int(e % F);
    phi[e] = fmaxf(z[(h * rows + r) * F + f] + bias[h * F + f], 0.f);
  }
}
// Its backward: dz[h, r, f] = dphi where phi > 0, else 0.
__global__ void relu_backward_kernel(float* dz, const float* dphi, const float* phi, int64_t rows, int H, int F) {
  GRID_STRIDE_LOOP(e, rows * H * F) {
    int64_t r = e / (int64_t(H) * F);
    int h = int(e / F % H), f = int(e % F);
    dz[(h * rows + r) * F + f] = phi[e] > 0.f ? dphi[e] : 0.f;
  }
}
// dbias[h, f] += sum over rows of dz[h, r, f] (one thread per (h, f), rows in order).
__global__ void column_sum_kernel(float* dbias, const float* dz, int64_t rows, int H, int F) {
  GRID_STRIDE_LOOP(e, int64_t(H) * F) {
    const int64_t h = e / F, f = e % F;
    float s = 0.f;
    for (int64_t r = 0; r < rows; r++) s += dz[(h * rows + r) * F + f];
    dbias[e] += s;
  }
}

void check_sizes(const char* op, int B, int T_, int H, int Hx, int D, int Fw) {
  ENSURE(B >= 0 && T_ >= 0 && H > 0 && Hx > 0 && H % Hx == 0 && D > 0 && Fw > 0,
         "%s (cuda): bad sizes B = %d, T = %d, H = %d, Hx = %d, D = %d, F = %d (H a multiple of Hx)", op, B,
         T_, H, Hx, D, Fw);
}

// z[h] = xg[h] W[h] for every h: (H, rows, Fw), one batched product; xg (H, rows, D) is scratch.
template <typename T>
void project(float* z, float* xg, const T* x, const float* W, int64_t rows, int H, int Hx, int D, int Fw,
             Stream stream) {
  launch_kernel(gather_heads_kernel<T>, blocks_for(int64_t(H) * rows * D), kThreads, 0, stream, xg, x, rows, H, Hx, D);
  const float* xgp = xg;
  gemm(z, xgp, W, GemmShape{H, int(rows), Fw, D}, nullptr, stream);
}

// The projections' backward from dz (H, rows, Fw): dW[h] += xg[h / G]^T dz[h], and dx.
template <typename T>
void project_backward(T* dx, float* dW, const float* dz, const T* x, const float* W, int64_t rows, int H, int Hx,
                      int D, int Fw, Stream stream) {
  if (dW) {  // dW[h] (D, Fw) += xg[h]^T (D, rows) dz[h] (rows, Fw)
    DeviceScratch<float> xg(size_t(rows) * H * D, stream);
    launch_kernel(gather_heads_kernel<T>, blocks_for(int64_t(H) * rows * D), kThreads, 0, stream, xg.p, x, rows, H, Hx, D);
    const float* xgp = xg.p;
    gemm(dW, xgp, dz, GemmShape{H, D, Fw, int(rows), Transpose::a, Accumulate::yes}, nullptr, stream);
  }
  if (dx) {  // dxg[h] (rows, D) = dz[h] (rows, Fw) W[h]^T, then each group summed into dx
    DeviceScratch<float> dxg(size_t(rows) * H * D, stream);
    gemm(dxg.p, dz, W, GemmShape{H, int(rows), D, Fw, Transpose::b}, nullptr, stream);
    const float* dxgp = dxg.p;
    launch_kernel(scatter_heads_kernel<T>, blocks_for(rows * Hx * D), kThreads, 0, stream, dx, dxgp, rows, H, Hx, D);
  }
}

unsigned warps_blocks(int64_t warps) { return unsigned((warps + kThreads / 32 - 1) / (kThreads / 32)); }

}  // namespace

template <typename T>
void hedgehog_forward(float* phi, const T* x, const float* W, int B, int T_, int H, int Hx, int D, int Fh,
                      Stream stream) {
  check_sizes("hedgehog_forward", B, T_, H, Hx, D, Fh);
  const int64_t rows = int64_t(B) * T_;
  if (rows == 0) return;
  DeviceScratch<float> z(size_t(rows) * H * Fh, stream), xg(size_t(rows) * H * D, stream);
  project(z.p, xg.p, x, W, rows, H, Hx, D, Fh, stream);
  const float* zp = z.p;
  launch_kernel(softmax_pair_kernel, warps_blocks(rows * H), kThreads, 0, stream, phi, zp, rows, H, Fh);
}

template <typename T>
void hedgehog_backward(T* dx, float* dW, const float* dphi, const float* phi, const T* x, const float* W, int B,
                       int T_, int H, int Hx, int D, int Fh, Stream stream) {
  check_sizes("hedgehog_backward", B, T_, H, Hx, D, Fh);
  const int64_t rows = int64_t(B) * T_;
  if (rows == 0 || (!dx && !dW)) return;
  DeviceScratch<float> dz(size_t(rows) * H * Fh, stream);
  launch_kernel(softmax_pair_backward_kernel, warps_blocks(rows * H), kThreads, 0, stream, dz.p, dphi, phi, rows,
                H, Fh);
  project_backward(dx, dW, dz.p, x, W, rows, H, Hx, D, Fh, stream);
}

template <typename T>
void t2r_forward(float* phi, const T* x, const float* W, const float* bias, int B, int T_, int H, int Hx, int D,
                 int F, Stream stream) {
  check_sizes("t2r_forward", B, T_, H, Hx, D, F);
  const int64_t rows = int64_t(B) * T_;
  if (rows == 0) return;
  DeviceScratch<float> z(size_t(rows) * H * F, stream), xg(size_t(rows) * H * D, stream);
  project(z.p, xg.p, x, W, rows, H, Hx, D, F, stream);
  const float* zp = z.p;
  launch_kernel(bias_relu_kernel, blocks_for(rows * H * F), kThreads, 0, stream, phi, zp, bias, rows, H, F);
}

template <typename T>
void t2r_backward(T* dx, float* dW, float* dbias, const float* dphi, const float* phi, const T* x, const float* W,
                  int B, int T_, int H, int Hx, int D, int F, Stream stream) {
  check_sizes("t2r_backward", B, T_, H, Hx, D, F);
  const int64_t rows = int64_t(B) * T_;
  if (rows == 0 || (!dx && !dW && !dbias)) return;
  DeviceScratch<float> dz(size_t(rows) * H * F, stream);
  launch_kernel(relu_backward_kernel, blocks_for(rows * H * F), kThreads, 0, stream, dz.p, dphi, phi, rows, H, F);
  const float* dzp = dz.p;
  if (dbias) launch_kernel(column_sum_kernel, blocks_for(int64_t(H) * F), kThreads, 0, stream, dbias, dzp, rows, H, F);
  project_backward(dx, dW, dz.p, x, W, rows, H, Hx, D, F, stream);
}

#define INSTANTIATE(T)                                                                                           \
  template void hedgehog_forward<T>(float*, const T*, const float*, int, int, int, int, int, int, Stream);      \
  template void hedgehog_backward<T>(T*, float*, const float*, const float*, const T*, const float*, int, int,  \
                                     int, int, int, int, Stream);                                               \
  template void t2r_forward<T>(float*, const T*, const float*, const float*, int, int, int, int, int, int,      \
                               Stream);                                                                         \
  template void t2r_backward<T>(T*, float*, float*, const float*, const float*, const T*, const float*, int,    \
                                int, int, int, int, int, Stream);
INSTANTIATE(float)
INSTANTIATE(bf16)

}  // namespace lolcats::cuda
