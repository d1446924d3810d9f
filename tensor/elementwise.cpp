#include "tensor/elementwise.h"

#include "tensor/device.h"
#ifdef LOLCATS_CUDA
#include "cuda/elementwise.h"
#endif

#include <cmath>

namespace lolcats {

template <typename T> static inline T sigmoid(T x) { return T(1) / (T(1) + std::exp(-x)); }

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

template <typename T> void silu_forward(T* y, const T* x, int64_t n) {
#pragma omp parallel for
  for (int64_t i = 0; i < n; i++) y[i] = x[i] * sigmoid(x[i]);
}
template <typename T> void silu_backward(T* dx, const T* dy, const T* x, int64_t n) {
#pragma omp parallel for
  for (int64_t i = 0; i < n; i++) {
    T s = sigmoid(x[i]);
    dx[i] = dy[i] * s * (T(1) + x[i] * (T(1) - s));
  }
}

template <typename T> void swiglu_forward(T* y, const T* gate, const T* up, int64_t n) {
#pragma omp parallel for
  for (int64_t i = 0; i < n; i++) y[i] = gate[i] * sigmoid(gate[i]) * up[i];
}
template <typename T>
void swiglu_backward(T* dgate, T* dup, const T* dy, const T* gate, const T* up, int64_t n) {
#pragma omp parallel for
  for (int64_t i = 0; i < n; i++) {
    T s = sigmoid(gate[i]);
    if (dgate) dgate[i] = dy[i] * up[i] * s * (T(1) + gate[i] * (T(1) - s));
    if (dup) dup[i] = dy[i] * gate[i] * s;
  }
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
  ON_CUDA(y.dtype(), T, cuda::add_forward(y.dev<T>(), a.dev<T>(), b.dev<T>(), y.numel(), nullptr));
}

void mul_forward(Tensor& y, const Tensor& a, const Tensor& b) {
  check_same_shape("mul", a, b);
  check_same_shape("mul", y, a);
  if (check_operands("mul", {&y, &a, &b})) return mul_forward(y.f32(), a.f32(), b.f32(), y.numel());
  ON_CUDA(y.dtype(), T, cuda::mul_forward(y.dev<T>(), a.dev<T>(), b.dev<T>(), y.numel(), nullptr));
}

void mul_backward(Tensor* da, Tensor* db, const Tensor& dy, const Tensor& a, const Tensor& b) {
  check_same_shape("mul backward", a, b);
  check_same_shape("mul backward", dy, a);
  if (check_operands("mul backward", {da, db, &dy, &a, &b}))
    return mul_backward(da ? da->f32() : nullptr, db ? db->f32() : nullptr, dy.f32(), a.f32(),
                        b.f32(), dy.numel());
  ON_CUDA(dy.dtype(), T, cuda::mul_backward(da ? da->dev<T>() : nullptr, db ? db->dev<T>() : nullptr,
                                            dy.dev<T>(), a.dev<T>(), b.dev<T>(), dy.numel(), nullptr));
}

void scale_forward(Tensor& y, const Tensor& a, float s) {
  check_same_shape("scale", y, a);
  if (check_operands("scale", {&y, &a})) return scale_forward(y.f32(), a.f32(), s, y.numel());
  ON_CUDA(y.dtype(), T, cuda::scale_forward(y.dev<T>(), a.dev<T>(), s, y.numel(), nullptr));
}

void silu_forward(Tensor& y, const Tensor& x) {
  check_same_shape("silu", y, x);
  if (check_operands("silu", {&y, &x})) return silu_forward(y.f32(), x.f32(), y.numel());
  ON_CUDA(y.dtype(), T, cuda::silu_forward(y.dev<T>(), x.dev<T>(), y.numel(), nullptr));
}

void silu_backward(Tensor& dx, const Tensor& dy, const Tensor& x) {
  check_same_shape("silu backward", dx, x);
  check_same_shape("silu backward", dy, x);
  if (check_operands("silu backward", {&dx, &dy, &x}))
    return silu_backward(dx.f32(), dy.f32(), x.f32(), x.numel());
  ON_CUDA(x.dtype(), T, cuda::silu_backward(dx.dev<T>(), dy.dev<T>(), x.dev<T>(), x.numel(), nullptr));
}

void swiglu_forward(Tensor& y, const Tensor& gate, const Tensor& up) {
  check_same_shape("swiglu", gate, up);
  check_same_shape("swiglu", y, gate);
  if (check_operands("swiglu", {&y, &gate, &up}))
    return swiglu_forward(y.f32(), gate.f32(), up.f32(), y.numel());
  ON_CUDA(y.dtype(), T, cuda::swiglu_forward(y.dev<T>(), gate.dev<T>(), up.dev<T>(), y.numel(), nullptr));
}

void swiglu_backward(Tensor* dgate, Tensor* dup, const Tensor& dy, const Tensor& gate, const Tensor& up) {
  check_same_shape("swiglu backward", gate, up);
  check_same_shape("swiglu backward", dy, gate);
  if (check_operands("swiglu backward", {dgate, dup, &dy, &gate, &up}))
    return swiglu_backward(dgate ? dgate->f32() : nullptr, dup ? dup->f32() : nullptr, dy.f32(),
                           gate.f32(), up.f32(), dy.numel());
  ON_CUDA(dy.dtype(), T, cuda::swiglu_backward(dgate ? dgate->dev<T>() : nullptr, dup ? dup->dev<T>() : nullptr,
                                               dy.dev<T>(), gate.dev<T>(), up.dev<T>(), dy.numel(), nullptr));
}

}  // namespace lolcats
