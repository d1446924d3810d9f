#include "tensor/rmsnorm.h"

#include <cmath>

namespace lolcats {

template <typename T>
void rmsnorm_forward(T* y, T* rstd, const T* x, const T* w, int N, int C, T eps) {
#pragma omp parallel for
  for (int n = 0; n < N; n++) {
    const T* xn = x + int64_t(n) * C;
    T* yn = y + int64_t(n) * C;
    double ss = 0;  // sum of squares in double: C can be 4096+
    for (int c = 0; c < C; c++) ss += double(xn[c]) * xn[c];
    T r = T(1.0 / std::sqrt(ss / C + double(eps)));
    for (int c = 0; c < C; c++) yn[c] = w[c] * (xn[c] * r);
    if (rstd) rstd[n] = r;
  }
}

template <typename T>
void rmsnorm_backward(T* dx, T* dw, const T* dy, const T* x, const T* w, const T* rstd, int N,
                      int C) {
  if (dx) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
      const T* xn = x + int64_t(n) * C;
      const T* gn = dy + int64_t(n) * C;
      T* dxn = dx + int64_t(n) * C;
      T r = rstd[n];
      double dot = 0;  // sum_j (w_j dy_j) xhat_j
      for (int c = 0; c < C; c++) dot += double(w[c] * gn[c]) * (xn[c] * r);
      T mean_dot = T(dot / C);
      for (int c = 0; c < C; c++) dxn[c] = r * (w[c] * gn[c] - xn[c] * r * mean_dot);
    }
  }
  if (dw) {
    // Parallel over channel slices: each thread owns dw[c0:c1) and walks all rows.
#pragma omp parallel for
    for (int c0 = 0; c0 < C; c0 += 64) {
      int c1 = c0 + 64 < C ? c0 + 64 : C;
      for (int n = 0; n < N; n++) {
        T r = rstd[n];
        for (int c = c0; c < c1; c++) dw[c] += dy[int64_t(n) * C + c] * (x[int64_t(n) * C + c] * r);
      }
    }
  }
}

template void rmsnorm_forward<float>(float*, float*, const float*, const float*, int, int, float);
template void rmsnorm_forward<double>(double*, double*, const double*, const double*, int, int,
                                      double);
template void rmsnorm_backward<float>(float*, float*, const float*, const float*, const float*,
                                      const float*, int, int);
template void rmsnorm_backward<double>(double*, double*, const double*, const double*,
                                       const double*, const double*, int, int);

}  // namespace lolcats
