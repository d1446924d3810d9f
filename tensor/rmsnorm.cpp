#include "tensor/rmsnorm.h"
#include "tensor/op_profile.h"

#include "tensor/device.h"
#ifdef LOLCATS_CUDA
#include "cuda/rmsnorm.h"
#endif

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


// ---- Tensor-level entry points ---------------------------------------------------------------------

void rmsnorm_forward(Tensor& y, Tensor& rstd, const Tensor& x, const Tensor& w, float eps) {
  int C = int(x.size(-1)), N = int(x.numel() / C);
  check_same_shape("rmsnorm", y, x);
  check_shape(w, {C}, "rmsnorm weight", x.dtype());
  check_shape(rstd, {N}, "rmsnorm rstd");
  bool cpu = check_operands("rmsnorm", {&y, &x, &w});
  check_devices("rmsnorm", {&x, &rstd});
  if (cpu) return rmsnorm_forward(y.f32(), rstd.f32(), x.f32(), w.f32(), N, C, eps);
  OpTimer timer(OpKind::norm_rope_swiglu, 4.0 * x.numel(), op_bytes({&y, &rstd, &x, &w}));
  ON_CUDA(x.dtype(), T, cuda::rmsnorm_forward(y.dev<T>(), rstd.dev<float>(), x.dev<T>(), w.dev<T>(), N, C, eps, nullptr));
}

void rmsnorm_backward(Tensor* dx, Tensor* dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                      const Tensor& rstd) {
  int C = int(x.size(-1)), N = int(x.numel() / C);
  check_same_shape("rmsnorm backward", dy, x);
  if (dx) check_same_shape("rmsnorm backward", *dx, x);
  if (dw) check_shape(*dw, {C}, "rmsnorm weight gradient");
  bool cpu = check_operands("rmsnorm backward", {dx, &dy, &x, &w});
  check_devices("rmsnorm backward", {&x, &rstd, dw});
  if (cpu)
    return rmsnorm_backward(dx ? dx->f32() : nullptr, dw ? dw->f32() : nullptr, dy.f32(), x.f32(),
                            w.f32(), rstd.f32(), N, C);
  OpTimer timer(OpKind::norm_rope_swiglu, 8.0 * x.numel(), op_bytes({dx, dw, &dy, &x, &w, &rstd}));
  ON_CUDA(x.dtype(), T, cuda::rmsnorm_backward(dx ? dx->dev<T>() : nullptr, dw ? dw->dev<float>() : nullptr,
                                               dy.dev<T>(), x.dev<T>(), w.dev<T>(), rstd.dev<float>(), N, C, nullptr));
}

}  // namespace lolcats
