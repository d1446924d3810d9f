#include "lolcats/feature_map.h"
#include "tensor/op_profile.h"

#include "tensor/device.h"

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <vector>

#include "cuda/feature_map.h"
#include "tensor/check.h"
#include "tensor/matmul.h"

namespace lolcats {

namespace {

template <typename T>
void check_heads(int H, int Hx) {
  ENSURE(Hx > 0 && H % Hx == 0, "feature map: %d query heads not a multiple of %d input heads", H, Hx);
}

}  // namespace

FeatureMapKind parse_feature_map(const std::string& name) {
  if (name == "hedgehog") return FeatureMapKind::hedgehog;
  if (name == "t2r") return FeatureMapKind::t2r;
  fail(__FILE__, __LINE__, "unknown feature map \"" + name + "\" (hedgehog or t2r)");
}

const char* feature_map_name(FeatureMapKind k) { return k == FeatureMapKind::t2r ? "t2r" : "hedgehog"; }

// The projections z = x W[h] and their backward are matrix products per head, so they go through
// matmul (tensor/matmul.h: the packed kernel or Eigen's GEMM, by size) on contiguous per-head copies: xg (Hx, rows, D) gathered from x (rows, Hx, D)
// and z / dz (H, rows, Fh). The O(rows) softmax work in between is done row by row.
template <typename T>
std::vector<T> gather_heads(const T* x, int64_t rows, int Hx, int D) {
  std::vector<T> xg(size_t(rows) * Hx * D);
#pragma omp parallel for
  for (int64_t r = 0; r < rows; r++)
    for (int hx = 0; hx < Hx; hx++)
      std::copy(x + (r * Hx + hx) * D, x + (r * Hx + hx + 1) * D, xg.data() + (hx * rows + r) * D);
  return xg;
}

// out (2 Fh) = [softmax(z), softmax(-z)] clamped below at 1e-12, each softmax shifted by its own
// max for stability. As Eigen arrays, for their SIMD exp (std::exp in a loop is scalar libm).
template <typename T>
void softmax_pair(T* out, const T* z, int Fh) {
  using Array = Eigen::Array<T, Eigen::Dynamic, 1>;
  Eigen::Map<const Array> zs(z, Fh);
  Eigen::Map<Array> pos(out, Fh), neg(out + Fh, Fh);
  pos = (zs - zs.maxCoeff()).exp();
  neg = (zs.minCoeff() - zs).exp();
  pos = (pos / pos.sum()).max(T(kFeatureClamp));
  neg = (neg / neg.sum()).max(T(kFeatureClamp));
}

template <typename T>
void hedgehog_forward(T* phi, const T* x, const T* W, int B, int T_, int H, int Hx, int D, int Fh) {
  check_heads<T>(H, Hx);
  const int G = H / Hx, F = 2 * Fh;
  const int64_t rows = int64_t(B) * T_;
  std::vector<T> xg = gather_heads(x, rows, Hx, D), z(size_t(rows) * H * Fh);
  for (int h = 0; h < H; h++)  // z[h] (rows, Fh) = xg[h / G] (rows, D) @ W[h] (D, Fh)
    matmul_forward(z.data() + h * rows * Fh, xg.data() + (h / G) * rows * D, W + int64_t(h) * D * Fh,
                   1, int(rows), Fh, D);
#pragma omp parallel for
  for (int64_t r = 0; r < rows; r++)
    for (int h = 0; h < H; h++) softmax_pair(phi + (r * H + h) * F, z.data() + (h * rows + r) * Fh, Fh);
}

template <typename T>
void hedgehog_row(T* phi, const T* x, const T* W, int H, int Hx, int D, int Fh, T* z) {
  check_heads<T>(H, Hx);
  const int G = H / Hx;
  for (int h = 0; h < H; h++) {
    const T* xh = x + (h / G) * D;
    const T* Wh = W + int64_t(h) * D * Fh;
    std::fill(z, z + Fh, T(0));
    for (int d = 0; d < D; d++)  // z = x W[h]
      for (int f = 0; f < Fh; f++) z[f] += xh[d] * Wh[d * Fh + f];
    softmax_pair(phi + int64_t(h) * 2 * Fh, z, Fh);
  }
}

template <typename T>
void hedgehog_backward(T* dx, T* dW, const T* dphi, const T* phi, const T* x, const T* W, int B,
                       int T_, int H, int Hx, int D, int Fh) {
  check_heads<T>(H, Hx);
  const int G = H / Hx, F = 2 * Fh;
  const int64_t rows = int64_t(B) * T_;
  // dz (H, rows, Fh)
  std::vector<T> dz(size_t(rows) * H * Fh);
#pragma omp parallel for
  for (int64_t r = 0; r < rows; r++)
    for (int h = 0; h < H; h++) {
      const T* p = phi + (r * H + h) * F;
      const T* g = dphi + (r * H + h) * F;
      T* out = dz.data() + (h * rows + r) * Fh;
      // A clamped entry passed a constant: no gradient flows back through it, and in the softmax
      // Jacobian it stands for a probability below 1e-12, which we take as 0 (torch would use the
      // unclamped value; the difference is < 1e-12 * |<ds, s>|).
      auto live = [&](int f) { return p[f] > T(kFeatureClamp) ? g[f] : T(0); };
      auto prob = [&](int f) { return p[f] > T(kFeatureClamp) ? p[f] : T(0); };
      T dot1 = 0, dot2 = 0;
      for (int f = 0; f < Fh; f++) {
        dot1 += live(f) * p[f];
        dot2 += live(Fh + f) * p[Fh + f];
      }
      for (int f = 0; f < Fh; f++)
        out[f] = prob(f) * (live(f) - dot1) - prob(Fh + f) * (live(Fh + f) - dot2);
    }
  if (dW) {
    // dW[h] (D, Fh) += xg[h / G]^T (D, rows) @ dz[h] (rows, Fh)
    std::vector<T> xg = gather_heads(x, rows, Hx, D);
    for (int h = 0; h < H; h++)
      matmul_forward(dW + int64_t(h) * D * Fh, xg.data() + (h / G) * rows * D, dz.data() + h * rows * Fh,
                     1, D, Fh, int(rows), Transpose::a, Accumulate::yes);
  }
  if (dx) {
    // dx[:, hx] (rows, D) = sum over the G query heads h reading key head hx of dz[h] @ W[h]^T
    std::vector<T> dxg(size_t(rows) * Hx * D);
    for (int h = 0; h < H; h++)
      matmul_forward(dxg.data() + (h / G) * rows * D, dz.data() + h * rows * Fh, W + int64_t(h) * D * Fh,
                     1, int(rows), D, Fh, Transpose::b, accumulate_if(h % G != 0));
#pragma omp parallel for
    for (int64_t r = 0; r < rows; r++)
      for (int hx = 0; hx < Hx; hx++)
        std::copy(dxg.data() + (hx * rows + r) * D, dxg.data() + (hx * rows + r + 1) * D, dx + (r * Hx + hx) * D);
  }
}

template <typename T>
void t2r_forward(T* phi, const T* x, const T* W, const T* bias, int B, int T_, int H, int Hx, int D,
                 int F) {
  check_heads<T>(H, Hx);
  const int G = H / Hx;
  const int64_t rows = int64_t(B) * T_;
#pragma omp parallel for
  for (int64_t r = 0; r < rows; r++)
    for (int h = 0; h < H; h++) {
      const T* xr = x + (r * Hx + h / G) * D;
      const T* Wh = W + int64_t(h) * D * F;
      T* out = phi + (r * H + h) * F;
      for (int f = 0; f < F; f++) out[f] = bias[h * F + f];
      for (int d = 0; d < D; d++)
        for (int f = 0; f < F; f++) out[f] += xr[d] * Wh[d * F + f];
      for (int f = 0; f < F; f++) out[f] = std::max(out[f], T(0));
    }
}

template <typename T>
void t2r_backward(T* dx, T* dW, T* dbias, const T* dphi, const T* phi, const T* x, const T* W,
                  int B, int T_, int H, int Hx, int D, int F) {
  check_heads<T>(H, Hx);
  const int G = H / Hx;
  const int64_t rows = int64_t(B) * T_;
  auto dpre = [&](int64_t r, int h, int f) {  // relu': gradient only where the output is positive
    int64_t i = (r * H + h) * F + f;
    return phi[i] > 0 ? dphi[i] : T(0);
  };
  if (dW || dbias) {
#pragma omp parallel for
    for (int h = 0; h < H; h++)
      for (int64_t r = 0; r < rows; r++) {
        const T* xr = x + (r * Hx + h / G) * D;
        for (int f = 0; f < F; f++) {
          T g = dpre(r, h, f);
          if (g == 0) continue;
          if (dbias) dbias[h * F + f] += g;
          if (dW)
            for (int d = 0; d < D; d++) dW[(int64_t(h) * D + d) * F + f] += xr[d] * g;
        }
      }
  }
  if (dx) {
#pragma omp parallel for
    for (int64_t r = 0; r < rows; r++)
      for (int hx = 0; hx < Hx; hx++) {
        T* out = dx + (r * Hx + hx) * D;
        for (int d = 0; d < D; d++) out[d] = 0;
        for (int h = hx * G; h < (hx + 1) * G; h++)
          for (int f = 0; f < F; f++) {
            T g = dpre(r, h, f);
            if (g == 0) continue;
            for (int d = 0; d < D; d++) out[d] += g * W[(int64_t(h) * D + d) * F + f];
          }
      }
  }
}

template <typename T>
void hedgehog_identity_init(T* W, int H, int D, int Fh) {
  ENSURE(Fh <= D, "hedgehog identity init needs Fh <= D, got Fh=%d D=%d", Fh, D);
  for (int h = 0; h < H; h++)
    for (int d = 0; d < D; d++)
      for (int f = 0; f < Fh; f++) W[(int64_t(h) * D + d) * Fh + f] = d == f ? T(1) : T(0);
}

#define INSTANTIATE(T)                                                                           \
  template void hedgehog_forward<T>(T*, const T*, const T*, int, int, int, int, int, int);       \
  template void hedgehog_row<T>(T*, const T*, const T*, int, int, int, int, T*);                 \
  template void hedgehog_backward<T>(T*, T*, const T*, const T*, const T*, const T*, int, int,  \
                                     int, int, int, int);                                        \
  template void t2r_forward<T>(T*, const T*, const T*, const T*, int, int, int, int, int, int);  \
  template void t2r_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*, int, int,   \
                                int, int, int, int);                                             \
  template void hedgehog_identity_init<T>(T*, int, int, int);
INSTANTIATE(float)
INSTANTIATE(double)


// ---- Tensor-level entry points ---------------------------------------------------------------------
// x and dx: f32 (cpu), f32 or bf16 (cuda); weights, features and their gradients: f32 everywhere.

namespace {
float* opt(Tensor* t) { return t ? t->f32() : nullptr; }
float* dev_opt(Tensor* t) { return t ? t->dev<float>() : nullptr; }
// Checks the devices, that everything but x / dx is f32, and x's dtype; returns whether on the CPU.
bool check_feature_operands(const char* op, const Tensor* x, const Tensor* dx,
                            std::initializer_list<const Tensor*> f32s) {
  bool cpu = check_devices(op, f32s);
  ENSURE(check_operands(op, {x, dx}) == cpu, "%s: x and the weights live on different devices", op);
  for (const Tensor* t : f32s)
    ENSURE(!t || !t->defined() || t->dtype() == DType::f32, "%s: weights and features are f32, not %s", op,
           t->str().c_str());
  return cpu;
}
}  // namespace

void hedgehog_forward(Tensor& phi, const Tensor& x, const Tensor& W) {
  bool cpu = check_feature_operands("hedgehog", &x, nullptr, {&phi, &W});
  int B = int(x.size(0)), T = int(x.size(1)), Hx = int(x.size(2)), D = int(x.size(3));
  int H = int(W.size(0)), Fh = int(W.size(2));
  check_shape(phi, {B, T, H, 2 * Fh}, "hedgehog features");
  if (cpu) return hedgehog_forward(phi.f32(), x.f32(), W.f32(), B, T, H, Hx, D, Fh);
  OpTimer timer(OpKind::feature_map, 2.0 * B * T * H * D * Fh, op_bytes({&phi, &x, &W}));
  ON_CUDA(x.dtype(), X, cuda::hedgehog_forward(phi.dev<float>(), x.dev<X>(), W.dev<float>(), B, T, H, Hx, D, Fh, nullptr));
}

void hedgehog_backward(Tensor* dx, Tensor* dW, const Tensor& dphi, const Tensor& phi, const Tensor& x, const Tensor& W) {
  bool cpu = check_feature_operands("hedgehog backward", &x, dx, {dW, &dphi, &phi, &W});
  int B = int(x.size(0)), T = int(x.size(1)), Hx = int(x.size(2)), D = int(x.size(3));
  int H = int(W.size(0)), Fh = int(W.size(2));
  check_same_shape("hedgehog backward", dphi, phi);
  if (cpu) return hedgehog_backward(opt(dx), opt(dW), dphi.f32(), phi.f32(), x.f32(), W.f32(), B, T, H, Hx, D, Fh);
  OpTimer timer(OpKind::feature_map, 2.0 * B * T * H * D * Fh * ((dx ? 1 : 0) + (dW ? 1 : 0)),
                op_bytes({dx, dW, &dphi, &phi, &x, &W}));
  ON_CUDA(x.dtype(), X, cuda::hedgehog_backward(dx ? dx->dev<X>() : nullptr, dev_opt(dW), dphi.dev<float>(), phi.dev<float>(),
                                                x.dev<X>(), W.dev<float>(), B, T, H, Hx, D, Fh, nullptr));
}

void t2r_forward(Tensor& phi, const Tensor& x, const Tensor& W, const Tensor& bias) {
  bool cpu = check_feature_operands("t2r", &x, nullptr, {&phi, &W, &bias});
  int B = int(x.size(0)), T = int(x.size(1)), Hx = int(x.size(2)), D = int(x.size(3));
  int H = int(W.size(0)), F = int(W.size(2));
  check_shape(phi, {B, T, H, F}, "t2r features");
  if (cpu) return t2r_forward(phi.f32(), x.f32(), W.f32(), bias.f32(), B, T, H, Hx, D, F);
  OpTimer timer(OpKind::feature_map, 2.0 * B * T * H * D * F, op_bytes({&phi, &x, &W, &bias}));
  ON_CUDA(x.dtype(), X, cuda::t2r_forward(phi.dev<float>(), x.dev<X>(), W.dev<float>(), bias.dev<float>(), B, T, H, Hx, D, F, nullptr));
}

void t2r_backward(Tensor* dx, Tensor* dW, Tensor* dbias, const Tensor& dphi, const Tensor& phi, const Tensor& x,
                  const Tensor& W) {
  bool cpu = check_feature_operands("t2r backward", &x, dx, {dW, dbias, &dphi, &phi, &W});
  int B = int(x.size(0)), T = int(x.size(1)), Hx = int(x.size(2)), D = int(x.size(3));
  int H = int(W.size(0)), F = int(W.size(2));
  check_same_shape("t2r backward", dphi, phi);
  if (cpu) return t2r_backward(opt(dx), opt(dW), opt(dbias), dphi.f32(), phi.f32(), x.f32(), W.f32(), B, T, H, Hx, D, F);
  OpTimer timer(OpKind::feature_map, 2.0 * B * T * H * D * F * ((dx ? 1 : 0) + (dW ? 1 : 0)),
                op_bytes({dx, dW, dbias, &dphi, &phi, &x, &W}));
  ON_CUDA(x.dtype(), X, cuda::t2r_backward(dx ? dx->dev<X>() : nullptr, dev_opt(dW), dev_opt(dbias), dphi.dev<float>(), phi.dev<float>(),
                                           x.dev<X>(), W.dev<float>(), B, T, H, Hx, D, F, nullptr));
}

}  // namespace lolcats
