#include "tensor/rope.h"
#include "tensor/op_profile.h"

#include <vector>

#include "tensor/device.h"
#ifdef LOLCATS_CUDA
#include "cuda/rope.h"
#endif

#include <cmath>

#include "tensor/check.h"

namespace lolcats {

void rope_inv_freq(double* inv_freq, int D, const RopeConfig& cfg) {
  ENSURE(D % 2 == 0, "RoPE needs an even head dimension, got %d", D);
  const double kPi = 3.14159265358979323846;
  for (int i = 0; i < D / 2; i++) {
    double f = 1.0 / std::pow(cfg.theta, double(2 * i) / D);
    if (cfg.llama3_scaling) {
      double L = cfg.original_max_position, wavelen = 2 * kPi / f;
      if (wavelen > L / cfg.low_freq_factor) {
        f = f / cfg.factor;
      } else if (wavelen >= L / cfg.high_freq_factor) {
        double s = (L / wavelen - cfg.low_freq_factor) / (cfg.high_freq_factor - cfg.low_freq_factor);
        f = (1 - s) * f / cfg.factor + s * f;
      }
    }
    inv_freq[i] = f;
  }
}

template <typename T>
void rope_tables(T* cos_t, T* sin_t, const int32_t* pos, int n_pos, int D, const double* inv_freq) {
  for (int t = 0; t < n_pos; t++)
    for (int i = 0; i < D / 2; i++) {
      double angle = double(pos[t]) * inv_freq[i];
      cos_t[int64_t(t) * (D / 2) + i] = T(std::cos(angle));
      sin_t[int64_t(t) * (D / 2) + i] = T(std::sin(angle));
    }
}

// Rotates every pair by +angle (sign = 1) or -angle (sign = -1).
template <typename T>
static void rotate(T* y, const T* x, const T* cos_t, const T* sin_t, int B, int T_, int H, int D,
                   RopeLayout layout, T sign) {
  const int half = D / 2;
  const int64_t rows = int64_t(B) * T_ * H;
#pragma omp parallel for
  for (int64_t r = 0; r < rows; r++) {
    int t = int((r / H) % T_);
    const T* c = cos_t + int64_t(t) * half;
    const T* s = sin_t + int64_t(t) * half;
    const T* xr = x + r * D;
    T* yr = y + r * D;
    for (int i = 0; i < half; i++) {
      int ia = layout == RopeLayout::half_split ? i : 2 * i;
      int ib = layout == RopeLayout::half_split ? i + half : 2 * i + 1;
      T a = xr[ia], b = xr[ib], sn = sign * s[i];
      yr[ia] = a * c[i] - b * sn;
      yr[ib] = a * sn + b * c[i];
    }
  }
}

template <typename T>
void rope_forward(T* y, const T* x, const T* cos_t, const T* sin_t, int B, int T_, int H, int D,
                  RopeLayout layout) {
  rotate(y, x, cos_t, sin_t, B, T_, H, D, layout, T(1));
}

template <typename T>
void rope_backward(T* dx, const T* dy, const T* cos_t, const T* sin_t, int B, int T_, int H, int D,
                   RopeLayout layout) {
  rotate(dx, dy, cos_t, sin_t, B, T_, H, D, layout, T(-1));
}

#define INSTANTIATE(T)                                                                          \
  template void rope_tables<T>(T*, T*, const int32_t*, int, int, const double*);                       \
  template void rope_forward<T>(T*, const T*, const T*, const T*, int, int, int, int, RopeLayout); \
  template void rope_backward<T>(T*, const T*, const T*, const T*, int, int, int, int, RopeLayout);
INSTANTIATE(float)
INSTANTIATE(double)


// ---- Tensor-level entry points ---------------------------------------------------------------------

namespace {
void check_rope(const char* op, const Tensor& y, const Tensor& x, const Tensor& cos_t, const Tensor& sin_t) {
  const Shape& s = x.shape();
  ENSURE(s.ndim == 4 && s[3] % 2 == 0, "%s: input must be (B, T, H, D) with D even, got %s", op, s.str().c_str());
  check_same_shape(op, y, x);
  check_shape(cos_t, {s[1], s[3] / 2}, "rope cos table");
  check_shape(sin_t, {s[1], s[3] / 2}, "rope sin table");
  check_devices(op, {&x, &cos_t, &sin_t});
}
}  // namespace

void rope_forward(Tensor& y, const Tensor& x, const Tensor& cos_t, const Tensor& sin_t, RopeLayout layout) {
  check_rope("rope", y, x, cos_t, sin_t);
  int B = int(x.size(0)), T = int(x.size(1)), H = int(x.size(2)), D = int(x.size(3));
  if (check_operands("rope", {&y, &x}))
    return rope_forward(y.f32(), x.f32(), cos_t.f32(), sin_t.f32(), B, T, H, D, layout);
  OpTimer timer(OpKind::norm_rope_swiglu, 3.0 * x.numel(), op_bytes({&y, &x, &cos_t, &sin_t}));
  ON_CUDA(x.dtype(), T_, cuda::rope_forward(y.dev<T_>(), x.dev<T_>(), cos_t.dev<float>(), sin_t.dev<float>(), B, T, H, D, layout, nullptr));
}

void rope_backward(Tensor& dx, const Tensor& dy, const Tensor& cos_t, const Tensor& sin_t, RopeLayout layout) {
  check_rope("rope backward", dx, dy, cos_t, sin_t);
  int B = int(dy.size(0)), T = int(dy.size(1)), H = int(dy.size(2)), D = int(dy.size(3));
  if (check_operands("rope backward", {&dx, &dy}))
    return rope_backward(dx.f32(), dy.f32(), cos_t.f32(), sin_t.f32(), B, T, H, D, layout);
  OpTimer timer(OpKind::norm_rope_swiglu, 3.0 * dy.numel(), op_bytes({&dx, &dy, &cos_t, &sin_t}));
  ON_CUDA(dy.dtype(), T_, cuda::rope_backward(dx.dev<T_>(), dy.dev<T_>(), cos_t.dev<float>(), sin_t.dev<float>(), B, T, H, D, layout, nullptr));
}

void rope_tables(Tensor& cos_t, Tensor& sin_t, int start, int T, int D, const RopeConfig& cfg) {
  std::vector<double> inv_freq(static_cast<size_t>(D / 2));
  rope_inv_freq(inv_freq.data(), D, cfg);
  std::vector<int32_t> pos(static_cast<size_t>(T));
  for (int t = 0; t < T; t++) pos[size_t(t)] = start + t;
  Tensor c = Tensor::empty({T, D / 2}), s = Tensor::empty({T, D / 2});
  rope_tables(c.f32(), s.f32(), pos.data(), T, D, inv_freq.data());
  Device dev = cos_t.defined() ? cos_t.device() : Device::cpu;
  cos_t = c.to(dev);
  sin_t = s.to(dev);
}

}  // namespace lolcats
