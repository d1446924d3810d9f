#include "lolcats/feature_map.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "tensor/check.h"

namespace lolcats {

namespace {

// Index helpers for (B, T, heads, X) tensors.
inline int64_t at(int b, int t, int h, int T_, int heads, int X) {
  return ((int64_t(b) * T_ + t) * heads + h) * X;
}

template <typename T>
void check_heads(int H, int Hx) {
  ENSURE(Hx > 0 && H % Hx == 0, "feature map: %d query heads not a multiple of %d input heads", H, Hx);
}

}  // namespace

template <typename T>
void hedgehog_forward(T* phi, const T* x, const T* W, int B, int T_, int H, int Hx, int D, int Fh) {
  check_heads<T>(H, Hx);
  const int G = H / Hx, F = 2 * Fh;
#pragma omp parallel for collapse(2)
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T_; t++) {
      std::vector<T> z(Fh);
      for (int h = 0; h < H; h++) {
        const T* xr = x + at(b, t, h / G, T_, Hx, D);
        const T* Wh = W + int64_t(h) * D * Fh;
        T* out = phi + at(b, t, h, T_, H, F);
        for (int f = 0; f < Fh; f++) z[f] = 0;
        for (int d = 0; d < D; d++)
          for (int f = 0; f < Fh; f++) z[f] += xr[d] * Wh[d * Fh + f];
        // softmax(z) and softmax(-z), each shifted by its own max for stability
        T zmax = *std::max_element(z.begin(), z.end()), zmin = *std::min_element(z.begin(), z.end());
        T s1 = 0, s2 = 0;
        for (int f = 0; f < Fh; f++) {
          s1 += (out[f] = std::exp(z[f] - zmax));
          s2 += (out[Fh + f] = std::exp(zmin - z[f]));
        }
        for (int f = 0; f < Fh; f++) {
          out[f] = std::max(out[f] / s1, T(kFeatureClamp));
          out[Fh + f] = std::max(out[Fh + f] / s2, T(kFeatureClamp));
        }
      }
    }
}

template <typename T>
void hedgehog_backward(T* dx, T* dW, const T* dphi, const T* phi, const T* x, const T* W, int B,
                       int T_, int H, int Hx, int D, int Fh) {
  check_heads<T>(H, Hx);
  const int G = H / Hx, F = 2 * Fh;
  const int64_t rows = int64_t(B) * T_;
  // dz for every (row, head): (B*T, H, Fh)
  std::vector<T> dz(size_t(rows) * H * Fh);
#pragma omp parallel for
  for (int64_t r = 0; r < rows; r++)
    for (int h = 0; h < H; h++) {
      const T* p = phi + (r * H + h) * F;
      const T* g = dphi + (r * H + h) * F;
      T* out = dz.data() + (r * H + h) * Fh;
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
    // dW[h] += sum over rows of x_row^T dz_row: parallel over heads, each owns its W[h].
#pragma omp parallel for
    for (int h = 0; h < H; h++) {
      T* dWh = dW + int64_t(h) * D * Fh;
      for (int64_t r = 0; r < rows; r++) {
        const T* xr = x + (r * Hx + h / G) * D;
        const T* dzr = dz.data() + (r * H + h) * Fh;
        for (int d = 0; d < D; d++)
          for (int f = 0; f < Fh; f++) dWh[d * Fh + f] += xr[d] * dzr[f];
      }
    }
  }
  if (dx) {
    // dx[row, head hx] = sum over the G query heads reading it of dz W[h]^T.
#pragma omp parallel for
    for (int64_t r = 0; r < rows; r++)
      for (int hx = 0; hx < Hx; hx++) {
        T* out = dx + (r * Hx + hx) * D;
        for (int d = 0; d < D; d++) out[d] = 0;
        for (int h = hx * G; h < (hx + 1) * G; h++) {
          const T* Wh = W + int64_t(h) * D * Fh;
          const T* dzr = dz.data() + (r * H + h) * Fh;
          for (int d = 0; d < D; d++)
            for (int f = 0; f < Fh; f++) out[d] += dzr[f] * Wh[d * Fh + f];
        }
      }
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
  template void hedgehog_backward<T>(T*, T*, const T*, const T*, const T*, const T*, int, int,  \
                                     int, int, int, int);                                        \
  template void t2r_forward<T>(T*, const T*, const T*, const T*, int, int, int, int, int, int);  \
  template void t2r_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*, int, int,   \
                                int, int, int, int);                                             \
  template void hedgehog_identity_init<T>(T*, int, int, int);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace lolcats
