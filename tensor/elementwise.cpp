#include "tensor/elementwise.h"

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

}  // namespace lolcats
