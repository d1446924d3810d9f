#include "lolcats/hybrid_reference.h"

#include <cmath>
#include <limits>
#include <vector>

namespace lolcats {

namespace {

// The sets of LOLCATS.md 2.2, straight from the definition; under the reference mask (terrace
// only) the blocks of a sequence of T tokens end at token T, and for T <= 64 every causal pair is
// in both sets.
struct Sets {
  HybridVariant v;
  bool reference;
  int T;
  int block(int i) const {
    const int whole = (T + kHybridBlock - 1) / kHybridBlock * kHybridBlock;  // tokens of whole blocks
    return (reference ? i + whole - T : i) / kHybridBlock;
  }
  bool window(int i, int j) const {
    if (j > i) return false;
    if (v == HybridVariant::terrace) return block(j) >= block(i) - 1;
    if (v == HybridVariant::sw) return i - j < kHybridBlock;
    return false;
  }
  bool linear(int i, int j) const {
    if (j > i) return false;
    if (reference && v == HybridVariant::terrace && T <= kHybridBlock) return true;
    return !window(i, j);
  }
};

template <typename T>
T dot(const T* a, const T* b, int n) {
  T s = 0;
  for (int x = 0; x < n; x++) s += a[x] * b[x];
  return s;
}

struct Idx {  // flat offsets into (B, T, heads, X) tensors
  int T_, H, Hkv, D, F;
  int64_t q(int b, int t, int h) const { return ((int64_t(b) * T_ + t) * H + h) * D; }
  int64_t kv(int b, int t, int g) const { return ((int64_t(b) * T_ + t) * Hkv + g) * D; }
  int64_t phi(int b, int t, int h) const { return ((int64_t(b) * T_ + t) * H + h) * F; }
  int64_t bht(int b, int h, int t) const { return (int64_t(b) * H + h) * T_ + t; }
};

}  // namespace

template <typename T>
void hybrid_reference_forward(T* y, T* Z, T* m, const T* q, const T* k, const T* v, const T* phiq,
                              const T* phik, const T* wlogit, int B, int T_, int H, int Hkv, int D,
                              int F, HybridVariant variant, AttentionMask mask) {
  const Idx ix{T_, H, Hkv, D, F};
  const Sets set{variant, mask == AttentionMask::reference, T_};
  const int G = H / Hkv;
  const T scale = T(1) / std::sqrt(T(D));
  for (int b = 0; b < B; b++)
    for (int h = 0; h < H; h++) {
      const T g = T(1) / (T(1) + std::exp(-wlogit[h]));
      for (int i = 0; i < T_; i++) {
        T mx = -std::numeric_limits<T>::infinity();
        for (int j = 0; j <= i; j++)
          if (set.window(i, j)) mx = std::max(mx, dot(q + ix.q(b, i, h), k + ix.kv(b, j, h / G), D) * scale);
        std::vector<T> num(D, T(0));
        T den = 0;
        for (int j = 0; j <= i; j++) {
          T w = 0;
          if (set.window(i, j)) w += g * std::exp(dot(q + ix.q(b, i, h), k + ix.kv(b, j, h / G), D) * scale - mx);
          if (set.linear(i, j)) w += dot(phiq + ix.phi(b, i, h), phik + ix.phi(b, j, h), F);
          for (int d = 0; d < D; d++) num[d] += w * v[ix.kv(b, j, h / G) + d];
          den += w;
        }
        for (int d = 0; d < D; d++) y[ix.q(b, i, h) + d] = num[d] / den;
        Z[ix.bht(b, h, i)] = den;
        m[ix.bht(b, h, i)] = std::isinf(mx) ? T(0) : mx;
      }
    }
}

template <typename T>
void hybrid_reference_backward(T* dq, T* dk, T* dv, T* dphiq, T* dphik, T* dwlogit, const T* dy,
                               const T* y, const T* Z, const T* m, const T* q, const T* k,
                               const T* v, const T* phiq, const T* phik, const T* wlogit, int B,
                               int T_, int H, int Hkv, int D, int F, HybridVariant variant,
                               AttentionMask mask) {
  const Idx ix{T_, H, Hkv, D, F};
  const Sets set{variant, mask == AttentionMask::reference, T_};
  const int G = H / Hkv;
  const T scale = T(1) / std::sqrt(T(D));
  auto zero = [](T* p, int64_t n) { if (p) std::fill(p, p + n, T(0)); };
  zero(dq, int64_t(B) * T_ * H * D);
  zero(dk, int64_t(B) * T_ * Hkv * D);
  zero(dv, int64_t(B) * T_ * Hkv * D);
  zero(dphiq, int64_t(B) * T_ * H * F);
  zero(dphik, int64_t(B) * T_ * H * F);
  for (int b = 0; b < B; b++)
    for (int h = 0; h < H; h++) {
      const int gk = h / G;
      const T g = T(1) / (T(1) + std::exp(-wlogit[h]));
      for (int i = 0; i < T_; i++) {
        const T* qi = q + ix.q(b, i, h);
        const T Zi = Z[ix.bht(b, h, i)], mi = m[ix.bht(b, h, i)];
        const T dZi = -dot(dy + ix.q(b, i, h), y + ix.q(b, i, h), D) / Zi;
        T dm = 0;
        int argmax = -1;
        T best = -std::numeric_limits<T>::infinity();
        for (int j = 0; j <= i; j++) {
          const T* kj = k + ix.kv(b, j, gk);
          const T* vj = v + ix.kv(b, j, gk);
          // d loss / d (weight of pair i, j) = dN_i . v_j + dZ_i,  dN_i = dy_i / Z_i
          T dw = dot(dy + ix.q(b, i, h), vj, D) / Zi + dZi;
          T w = 0;
          if (set.window(i, j)) {
            T s = dot(qi, kj, D) * scale;
            if (s > best) best = s, argmax = j;
            w = g * std::exp(s - mi);
            T ds = dw * w;
            dm -= ds;
            if (dwlogit) dwlogit[h] += ds * (T(1) - g);
            for (int d = 0; d < D; d++) {
              if (dq) dq[ix.q(b, i, h) + d] += ds * kj[d] * scale;
              if (dk) dk[ix.kv(b, j, gk) + d] += ds * qi[d] * scale;
            }
          }
          if (set.linear(i, j)) {
            const T* pqi = phiq + ix.phi(b, i, h);
            const T* pkj = phik + ix.phi(b, j, h);
            w += dot(pqi, pkj, F);
            for (int f = 0; f < F; f++) {
              if (dphiq) dphiq[ix.phi(b, i, h) + f] += dw * pkj[f];
              if (dphik) dphik[ix.phi(b, j, h) + f] += dw * pqi[f];
            }
          }
          if (dv)
            for (int d = 0; d < D; d++) dv[ix.kv(b, j, gk) + d] += w * dy[ix.q(b, i, h) + d] / Zi;
        }
        if (argmax >= 0)  // m_i = s_{i, argmax}: its gradient lands on that score
          for (int d = 0; d < D; d++) {
            const T* ka = k + ix.kv(b, argmax, gk);
            if (dq) dq[ix.q(b, i, h) + d] += dm * ka[d] * scale;
            if (dk) dk[ix.kv(b, argmax, gk) + d] += dm * qi[d] * scale;
          }
      }
    }
}

#define INSTANTIATE(T)                                                                             \
  template void hybrid_reference_forward<T>(T*, T*, T*, const T*, const T*, const T*, const T*,    \
                                            const T*, const T*, int, int, int, int, int, int,      \
                                            HybridVariant, AttentionMask);                         \
  template void hybrid_reference_backward<T>(T*, T*, T*, T*, T*, T*, const T*, const T*, const T*, \
                                             const T*, const T*, const T*, const T*, const T*,     \
                                             const T*, const T*, int, int, int, int, int, int,     \
                                             HybridVariant, AttentionMask);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace lolcats
