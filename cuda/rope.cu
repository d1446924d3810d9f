// RoPE kernels, then their launchers (math in cuda/rope.h and tensor/rope.h).
//
// One thread per rotated pair, in a grid-stride loop over the B*T*H*D/2 pairs: adjacent threads
// take adjacent pairs of a head vector, so reads and writes are coalesced in both layouts
// (half_split: two contiguous runs; interleaved: one contiguous run of pairs). Each thread reads
// both elements of its pair before writing either, so y may alias x.
#include "cuda/rope.h"

#include "cuda/common.cuh"

namespace lolcats::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 2048;  // grid-stride beyond this: ~16 blocks of 256 threads per H100 SM

// Rotates every pair by +angle (sign = 1) or by -angle (sign = -1).
template <typename T>
__global__ void rope_kernel(T* y, const T* x, const float* cos_t, const float* sin_t, int T_,
                            int H, int D, bool interleaved, float sign, int64_t pairs) {
  const int half = D / 2;
  for (int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; p < pairs;
       p += int64_t(gridDim.x) * blockDim.x) {
    const int i = int(p % half);
    const int64_t row = p / half;  // (b, t, h) flattened
    const int t = int((row / H) % T_);
    const int ia = interleaved ? 2 * i : i, ib = interleaved ? 2 * i + 1 : i + half;
    const float c = cos_t[int64_t(t) * half + i], s = sign * sin_t[int64_t(t) * half + i];
    const float a = to_f32(x[row * D + ia]), b = to_f32(x[row * D + ib]);
    y[row * D + ia] = from_f32<T>(a * c - b * s);
    y[row * D + ib] = from_f32<T>(a * s + b * c);
  }
}

template <typename T>
void rotate(T* y, const T* x, const float* cos_t, const float* sin_t, int B, int T_, int H, int D,
            RopeLayout layout, float sign, Stream stream) {
  ENSURE(B >= 0 && T_ >= 0 && H >= 0 && D > 0 && D % 2 == 0,
         "rope: bad sizes B=%d T=%d H=%d D=%d (D must be even)", B, T_, H, D);
  const int64_t pairs = int64_t(B) * T_ * H * (D / 2);
  if (pairs == 0) return;
  const int64_t needed = (pairs + kThreads - 1) / kThreads;
  const int blocks = int(needed < kMaxBlocks ? needed : kMaxBlocks);
  launch_kernel(rope_kernel<T>, blocks, kThreads, 0, stream, y, x, cos_t, sin_t, T_, H, D,
                layout == RopeLayout::interleaved, sign, pairs);
}

}  // namespace

template <typename T>
void rope_forward(T* y, const T* x, const float* cos_t, const float* sin_t, int B, int T_, int H,
                  int D, RopeLayout layout, Stream stream) {
  rotate(y, x, cos_t, sin_t, B, T_, H, D, layout, 1.0f, stream);
}

template <typename T>
void rope_backward(T* dx, const T* dy, const float* cos_t, const float* sin_t, int B, int T_, int H,
                   int D, RopeLayout layout, Stream stream) {
  rotate(dx, dy, cos_t, sin_t, B, T_, H, D, layout, -1.0f, stream);
}

#define INSTANTIATE(T)                                                                        \
  template void rope_forward<T>(T*, const T*, const float*, const float*, int, int, int, int, \
                                RopeLayout, Stream);                                          \
  template void rope_backward<T>(T*, const T*, const float*, const float*, int, int, int, int, \
                                 RopeLayout, Stream);
INSTANTIATE(float)
INSTANTIATE(bf16)

}  // namespace lolcats::cuda
