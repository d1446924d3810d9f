// Elementwise kernels, then their launchers (math in cuda/elementwise.h and tensor/elementwise.h).
//
// Every kernel is a grid-stride loop: thread i of the grid handles i, i + grid, i + 2 grid, ...
// (adjacent threads touch adjacent values: coalesced), over a grid capped at kMaxBlocks blocks. Each
// thread reads all its inputs before it writes, so outputs may alias inputs.
#include "cuda/elementwise.h"

#include "cuda/common.cuh"

namespace lolcats::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 2048;  // ~16 blocks of 256 threads per H100 SM; beyond that, loop

#define GRID_STRIDE_LOOP(i, n)                                                  \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n);     \
       i += int64_t(gridDim.x) * blockDim.x)

int blocks_for(int64_t n) {
  const int64_t needed = (n + kThreads - 1) / kThreads;
  return int(needed < kMaxBlocks ? needed : kMaxBlocks);
}

__device__ inline float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

template <typename T>
__global__ void add_kernel(T* y, const T* a, const T* b, int64_t n) {
  GRID_STRIDE_LOOP(i, n) y[i] = from_f32<T>(to_f32(a[i]) + to_f32(b[i]));
}

template <typename T>
__global__ void copy2_kernel(T* da, T* db, const T* dy, int64_t n) {  // add's backward
  GRID_STRIDE_LOOP(i, n) {
    T g = dy[i];
    if (da) da[i] = g;
    if (db) db[i] = g;
  }
}

template <typename T>
__global__ void mul_kernel(T* y, const T* a, const T* b, int64_t n) {
  GRID_STRIDE_LOOP(i, n) y[i] = from_f32<T>(to_f32(a[i]) * to_f32(b[i]));
}

template <typename T>
__global__ void mul_backward_kernel(T* da, T* db, const T* dy, const T* a, const T* b, int64_t n) {
  GRID_STRIDE_LOOP(i, n) {
    const float g = to_f32(dy[i]), av = to_f32(a[i]), bv = to_f32(b[i]);
    if (da) da[i] = from_f32<T>(g * bv);
    if (db) db[i] = from_f32<T>(g * av);
  }
}

template <typename T>
__global__ void scale_kernel(T* y, const T* a, float s, int64_t n) {
  GRID_STRIDE_LOOP(i, n) y[i] = from_f32<T>(s * to_f32(a[i]));
}

template <typename T>
__global__ void silu_kernel(T* y, const T* x, int64_t n) {
  GRID_STRIDE_LOOP(i, n) {
    const float v = to_f32(x[i]);
    y[i] = from_f32<T>(v * sigmoid(v));
  }
}

template <typename T>
__global__ void silu_backward_kernel(T* dx, const T* dy, const T* x, int64_t n) {
  GRID_STRIDE_LOOP(i, n) {
    const float v = to_f32(x[i]), s = sigmoid(v);
    dx[i] = from_f32<T>(to_f32(dy[i]) * s * (1.0f + v * (1.0f - s)));
  }
}

template <typename T>
__global__ void swiglu_kernel(T* y, const T* gate, const T* up, int64_t n) {
  GRID_STRIDE_LOOP(i, n) {
    const float g = to_f32(gate[i]);
    y[i] = from_f32<T>(g * sigmoid(g) * to_f32(up[i]));
  }
}

template <typename T>
__global__ void swiglu_backward_kernel(T* dgate, T* dup, const T* dy, const T* gate, const T* up,
                                       int64_t n) {
  GRID_STRIDE_LOOP(i, n) {
    const float d = to_f32(dy[i]), g = to_f32(gate[i]), u = to_f32(up[i]), s = sigmoid(g);
    if (dgate) dgate[i] = from_f32<T>(d * u * s * (1.0f + g * (1.0f - s)));
    if (dup) dup[i] = from_f32<T>(d * g * s);
  }
}

template <typename From, typename To>
__global__ void cast_kernel(To* y, const From* x, int64_t n) {
  GRID_STRIDE_LOOP(i, n) y[i] = from_f32<To>(to_f32(x[i]));
}

#undef GRID_STRIDE_LOOP

}  // namespace

// An empty tensor launches nothing (a grid of 0 blocks is a launch error).
template <typename T>
void add_forward(T* y, const T* a, const T* b, int64_t n, Stream stream) {
  if (n > 0) launch_kernel(add_kernel<T>, blocks_for(n), kThreads, 0, stream, y, a, b, n);
}
template <typename T>
void add_backward(T* da, T* db, const T* dy, int64_t n, Stream stream) {
  if (n > 0 && (da || db)) launch_kernel(copy2_kernel<T>, blocks_for(n), kThreads, 0, stream, da, db, dy, n);
}

template <typename T>
void mul_forward(T* y, const T* a, const T* b, int64_t n, Stream stream) {
  if (n > 0) launch_kernel(mul_kernel<T>, blocks_for(n), kThreads, 0, stream, y, a, b, n);
}
template <typename T>
void mul_backward(T* da, T* db, const T* dy, const T* a, const T* b, int64_t n, Stream stream) {
  if (n > 0 && (da || db))
    launch_kernel(mul_backward_kernel<T>, blocks_for(n), kThreads, 0, stream, da, db, dy, a, b, n);
}

template <typename T>
void scale_forward(T* y, const T* a, float s, int64_t n, Stream stream) {
  if (n > 0) launch_kernel(scale_kernel<T>, blocks_for(n), kThreads, 0, stream, y, a, s, n);
}
template <typename T>
void scale_backward(T* da, const T* dy, float s, int64_t n, Stream stream) {
  scale_forward(da, dy, s, n, stream);  // the same map: da = s * dy
}

template <typename T>
void silu_forward(T* y, const T* x, int64_t n, Stream stream) {
  if (n > 0) launch_kernel(silu_kernel<T>, blocks_for(n), kThreads, 0, stream, y, x, n);
}
template <typename T>
void silu_backward(T* dx, const T* dy, const T* x, int64_t n, Stream stream) {
  if (n > 0) launch_kernel(silu_backward_kernel<T>, blocks_for(n), kThreads, 0, stream, dx, dy, x, n);
}

template <typename T>
void swiglu_forward(T* y, const T* gate, const T* up, int64_t n, Stream stream) {
  if (n > 0) launch_kernel(swiglu_kernel<T>, blocks_for(n), kThreads, 0, stream, y, gate, up, n);
}
template <typename T>
void swiglu_backward(T* dgate, T* dup, const T* dy, const T* gate, const T* up, int64_t n,
                     Stream stream) {
  if (n > 0 && (dgate || dup))
    launch_kernel(swiglu_backward_kernel<T>, blocks_for(n), kThreads, 0, stream, dgate, dup, dy,
                  gate, up, n);
}

void cast_f32_to_bf16(bf16* y, const float* x, int64_t n, Stream stream) {
  auto* kernel = cast_kernel<float, bf16>;
  if (n > 0) launch_kernel(kernel, blocks_for(n), kThreads, 0, stream, y, x, n);
}
void cast_bf16_to_f32(float* y, const bf16* x, int64_t n, Stream stream) {
  auto* kernel = cast_kernel<bf16, float>;
  if (n > 0) launch_kernel(kernel, blocks_for(n), kThreads, 0, stream, y, x, n);
}

#define INSTANTIATE(T)                                                                        \
  template void add_forward<T>(T*, const T*, const T*, int64_t, Stream);                      \
  template void add_backward<T>(T*, T*, const T*, int64_t, Stream);                           \
  template void mul_forward<T>(T*, const T*, const T*, int64_t, Stream);                      \
  template void mul_backward<T>(T*, T*, const T*, const T*, const T*, int64_t, Stream);       \
  template void scale_forward<T>(T*, const T*, float, int64_t, Stream);                       \
  template void scale_backward<T>(T*, const T*, float, int64_t, Stream);                      \
  template void silu_forward<T>(T*, const T*, int64_t, Stream);                               \
  template void silu_backward<T>(T*, const T*, const T*, int64_t, Stream);                    \
  template void swiglu_forward<T>(T*, const T*, const T*, int64_t, Stream);                   \
  template void swiglu_backward<T>(T*, T*, const T*, const T*, const T*, int64_t, Stream);
INSTANTIATE(float)
INSTANTIATE(bf16)

}  // namespace lolcats::cuda
