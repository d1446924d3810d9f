#include "tensor/elementwise.h"
#include "tensor/op_profile.h"

#include "tensor/device.h"
#ifdef LOLCATS_CUDA
#include "cuda/elementwise.h"
#endif

#include <Eigen/Core>
#include <algorithm>
#include <cmath>

namespace lolcats {

namespace {
// The ops with an exp (SiLU, SwiGLU) work on chunks as Eigen arrays: Eigen's exp has SIMD kernels,
// while std::exp in a loop stays one scalar libm call per element (GCC vectorises it only under
// -ffast-math). A chunk of 2048 values is a few microseconds of work, spread over the threads.
constexpr int64_t kChunk = 2048;
template <typename T> using Chunk = Eigen::Array<T, Eigen::Dynamic, 1, 0, kChunk, 1>;  // on the stack
template <typename T> using In = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;
template <typename T> using Out = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;

template <typename F> void for_chunks(int64_t n, F f) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for
  for (int64_t c = 0; c < chunks; c++) f(c * kChunk, std::min(kChunk, n - c * kChunk));
}

// sigmoid(x) = 1 / (1 + exp(-x)), for a chunk
template <typename T> Chunk<T> sigmoid(const In<T>& x) { return T(1) / (T(1) + (-x).exp()); }
}  // namespace

template <typename T> void add_forward(T* y, const T* a, const T* b, int64_t n) {
#pragma omp parallel for simd
  for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}
template <typename T> void add_backward(T* da, T* db, const T* dy, int64_t n) {
#pragma omp parallel for simd
  for (int64_t i = 0; i < n; i++) {
    if (da) da[i] = dy[i];
    if (db) db[i] = dy[i];
  }
}

template <typename T> void mul_forward(T* y, const T* a, const T* b, int64_t n) {
#pragma omp parallel for simd
  for (int64_t i = 0; i < n; i++) y[i] = a[i] * b[i];
}
template <typename T>
void mul_backward(T* da, T* db, const T* dy, const T* a, const T* b, int64_t n) {
#pragma omp parallel for simd
  for (int64_t i = 0; i < n; i++) {
    if (da) da[i] = dy[i] * b[i];
    if (db) db[i] = dy[i] * a[i];
  }
}

template <typename T> void scale_forward(T* y, const T* a, T s, int64_t n) {
#pragma omp parallel for simd
  for (int64_t i = 0; i < n; i++) y[i] = s * a[i];
}
template <typename T> void scale_backward(T* da, const T* dy, T s, int64_t n) {
#pragma omp parallel for simd
  for (int64_t i = 0; i < n; i++) da[i] = s * dy[i];
}

// SiLU: y = x * sigmoid(x);  dy/dx = s (1 + x (1 - s)) with s = sigmoid(x)
template <typename T> void silu_forward(T* y, const T* x, int64_t n) {
  for_chunks(n, [&](int64_t i, int64_t len) {
    In<T> xs(x + i, len);
    Out<T>(y + i, len) = xs * sigmoid(xs);
  });
}
template <typename T> void silu_backward(T* dx, const T* dy, const T* x, int64_t n) {
  for_chunks(n, [&](int64_t i, int64_t len) {
    In<T> xs(x + i, len), d(dy + i, len);
    Chunk<T> s = sigmoid(xs);
    Out<T>(dx + i, len) = d * s * (T(1) + xs * (T(1) - s));
  });
}

// SwiGLU: y = silu(gate) * up;  dgate = dy up s (1 + gate (1 - s)),  dup = dy gate s
template <typename T> void swiglu_forward(T* y, const T* gate, const T* up, int64_t n) {
  for_chunks(n, [&](int64_t i, int64_t len) {
    In<T> g(gate + i, len), u(up + i, len);
    Out<T>(y + i, len) = g * sigmoid(g) * u;
  });
}
template <typename T>
void swiglu_backward(T* dgate, T* dup, const T* dy, const T* gate, const T* up, int64_t n) {
  for_chunks(n, [&](int64_t i, int64_t len) {
    In<T> g(gate + i, len), u(up + i, len), d(dy + i, len);
    Chunk<T> s = sigmoid(g);
    if (dgate) Out<T>(dgate + i, len) = d * u * s * (T(1) + g * (T(1) - s));
    if (dup) Out<T>(dup + i, len) = d * g * s;
  });
}

#define INSTANTIATE(T)                                                                   \
  template void add_forward<T>(T*, const T*, const T*, int64_t);                         \
  template void add_backward<T>(T*, T*, const T*, int64_t);                              \
  template void mul_forward<T>(T*, const T*, const T*, int64_t);                         \
  template void mul_backward<T>(T*, T*, const T*, const T*, const T*, int64_t);          \
  template void scale_forward<T>(T*, const T*, T, int64_t);                              \
  template void scale_backward<T>(T*, const T*, T, int64_t);                             \
  template void silu_forward<T>(T*, const T*, int64_t);                                  \
  template void silu_backward<T>(T*, const T*, const T*, int64_t);                       \
  template void swiglu_forward<T>(T*, const T*, const T*, int64_t);                      \
  template void swiglu_backward<T>(T*, T*, const T*, const T*, const T*, int64_t);
INSTANTIATE(float)
INSTANTIATE(double)

// ---- Tensor-level entry points ---------------------------------------------------------------------

void add_forward(Tensor& y, const Tensor& a, const Tensor& b) {
  check_same_shape("add", a, b);
  check_same_shape("add", y, a);
  if (check_operands("add", {&y, &a, &b})) return add_forward(y.f32(), a.f32(), b.f32(), y.numel());
  OpTimer timer(OpKind::norm_rope_swiglu, double(y.numel()), op_bytes({&y, &a, &b}));
  ON_CUDA(y.dtype(), T, cuda::add_forward(y.dev<T>(), a.dev<T>(), b.dev<T>(), y.numel(), nullptr));
}

void mul_forward(Tensor& y, const Tensor& a, const Tensor& b) {
  check_same_shape("mul", a, b);
  check_same_shape("mul", y, a);
  if (check_operands("mul", {&y, &a, &b})) return mul_forward(y.f32(), a.f32(), b.f32(), y.numel());
  OpTimer timer(OpKind::norm_rope_swiglu, double(y.numel()), op_bytes({&y, &a, &b}));
  ON_CUDA(y.dtype(), T, cuda::mul_forward(y.dev<T>(), a.dev<T>(), b.dev<T>(), y.numel(), nullptr));
}

void mul_backward(Tensor* da, Tensor* db, const Tensor& dy, const Tensor& a, const Tensor& b) {
  check_same_shape("mul backward", a, b);
  check_same_shape("mul backward", dy, a);
  if (check_operands("mul backward", {da, db, &dy, &a, &b}))
    return mul_backward(da ? da->f32() : nullptr, db ? db->f32() : nullptr, dy.f32(), a.f32(),
                        b.f32(), dy.numel());
  OpTimer timer(OpKind::norm_rope_swiglu, 2.0 * dy.numel(), op_bytes({da, db, &dy, &a, &b}));
  ON_CUDA(dy.dtype(), T, cuda::mul_backward(da ? da->dev<T>() : nullptr, db ? db->dev<T>() : nullptr,
                                            dy.dev<T>(), a.dev<T>(), b.dev<T>(), dy.numel(), nullptr));
}

void scale_forward(Tensor& y, const Tensor& a, float s) {
  check_same_shape("scale", y, a);
  if (check_operands("scale", {&y, &a})) return scale_forward(y.f32(), a.f32(), s, y.numel());
  OpTimer timer(OpKind::norm_rope_swiglu, double(y.numel()), op_bytes({&y, &a}));
  ON_CUDA(y.dtype(), T, cuda::scale_forward(y.dev<T>(), a.dev<T>(), s, y.numel(), nullptr));
}

void silu_forward(Tensor& y, const Tensor& x) {
  check_same_shape("silu", y, x);
  if (check_operands("silu", {&y, &x})) return silu_forward(y.f32(), x.f32(), y.numel());
  OpTimer timer(OpKind::norm_rope_swiglu, 4.0 * y.numel(), op_bytes({&y, &x}));
  ON_CUDA(y.dtype(), T, cuda::silu_forward(y.dev<T>(), x.dev<T>(), y.numel(), nullptr));
}

void silu_backward(Tensor& dx, const Tensor& dy, const Tensor& x) {
  check_same_shape("silu backward", dx, x);
  check_same_shape("silu backward", dy, x);
  if (check_operands("silu backward", {&dx, &dy, &x}))
    return silu_backward(dx.f32(), dy.f32(), x.f32(), x.numel());
  OpTimer timer(OpKind::norm_rope_swiglu, 6.0 * x.numel(), op_bytes({&dx, &dy, &x}));
  ON_CUDA(x.dtype(), T, cuda::silu_backward(dx.dev<T>(), dy.dev<T>(), x.dev<T>(), x.numel(), nullptr));
}

void swiglu_forward(Tensor& y, const Tensor& gate, const Tensor& up) {
  check_same_shape("swiglu", gate, up);
  check_same_shape("swiglu", y, gate);
  if (check_operands("swiglu", {&y, &gate, &up}))
    return swiglu_forward(y.f32(), gate.f32(), up.f32(), y.numel());
  OpTimer timer(OpKind::norm_rope_swiglu, 5.0 * y.numel(), op_bytes({&y, &gate, &up}));
  ON_CUDA(y.dtype(), T, cuda::swiglu_forward(y.dev<T>(), gate.dev<T>(), up.dev<T>(), y.numel(), nullptr));
}

void swiglu_backward(Tensor* dgate, Tensor* dup, const Tensor& dy, const Tensor& gate, const Tensor& up) {
  check_same_shape("swiglu backward", gate, up);
  check_same_shape("swiglu backward", dy, gate);
  if (check_operands("swiglu backward", {dgate, dup, &dy, &gate, &up}))
    return swiglu_backward(dgate ? dgate->f32() : nullptr, dup ? dup->f32() : nullptr, dy.f32(),
                           gate.f32(), up.f32(), dy.numel());
  OpTimer timer(OpKind::norm_rope_swiglu, 8.0 * dy.numel(), op_bytes({dgate, dup, &dy, &gate, &up}));
  ON_CUDA(dy.dtype(), T, cuda::swiglu_backward(dgate ? dgate->dev<T>() : nullptr, dup ? dup->dev<T>() : nullptr,
                                               dy.dev<T>(), gate.dev<T>(), up.dev<T>(), dy.numel(), nullptr));
}

}  // namespace lolcats
