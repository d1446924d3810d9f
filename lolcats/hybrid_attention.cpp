#include "lolcats/hybrid_attention.h"
#include "tensor/op_profile.h"

#include "tensor/device.h"

#include <cmath>
#include <limits>
#include <vector>

#include "cuda/hybrid_attention.h"
#include "tensor/check.h"
#include "tensor/heads.h"

namespace lolcats {

HybridVariant parse_variant(const std::string& name) {
  if (name == "terrace") return HybridVariant::terrace;
  if (name == "sw") return HybridVariant::sw;
  if (name == "linear") return HybridVariant::linear;
  fail(__FILE__, __LINE__, "unknown attention variant \"" + name + "\" (terrace, sw or linear)");
}

const char* variant_name(HybridVariant v) {
  return v == HybridVariant::terrace ? "terrace" : v == HybridVariant::sw ? "sw" : "linear";
}

AttentionMask parse_attention_mask(const std::string& name) {
  if (name == "paper") return AttentionMask::paper;
  if (name == "reference") return AttentionMask::reference;
  fail(__FILE__, __LINE__, "unknown attention mask \"" + name + "\" (paper or reference)");
}

HybridBlocks::HybridBlocks(int T_, HybridVariant variant, AttentionMask mask) : T(T_), offset(0), overlap(false) {
  if (mask != AttentionMask::reference || variant != HybridVariant::terrace) return;
  if (T <= kHybridBlock) overlap = true;
  else offset = (kHybridBlock - T % kHybridBlock) % kHybridBlock;
}

namespace {

template <typename T> T sigmoid(T x) { return T(1) / (T(1) + std::exp(-x)); }
template <typename T> using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;

// The exact (local) part of block t for one head: pair weights w = a + b (rows, keys) over keys
// j0 .. i0+rows-1 (a: the window's share g exp(s - m), b: the linear share phi_q . phi_k), and per
// row the position of the window max m_i (argmax, -1 without window).
template <typename T>
struct LocalTile {
  int i0, rows, j0, keys;
  bool overlap;
  Mat<T> s, a, w;
  std::vector<PairKind> cls;
  std::vector<int> argmax;

  LocalTile(int t, const HybridBlocks& bl)
      : i0(bl.begin(t)), rows(bl.end(t) - bl.begin(t)), j0(t > 0 ? bl.begin(t - 1) : i0), overlap(bl.overlap) {
    keys = i0 + rows - j0;
  }
  PairKind at(int r, int c) const { return cls[size_t(r) * keys + c]; }

  // q (rows x D), k (keys x D) for the scores; pq (rows x F), pk (keys x F) for local linear pairs.
  template <typename Q, typename K, typename PQ, typename PK>
  void build(const Q& q, const K& k, const PQ& pq, const PK& pk, T scale, T g, HybridVariant v) {
    s.noalias() = (q * k.transpose()) * scale;
    Mat<T> bl;
    if (v != HybridVariant::terrace || overlap) bl.noalias() = pq * pk.transpose();
    a.setZero(rows, keys);
    w.setZero(rows, keys);
    cls.assign(size_t(rows) * keys, PairKind::none);
    argmax.assign(rows, -1);
    for (int r = 0; r < rows; r++) {
      T mx = -std::numeric_limits<T>::infinity();
      for (int c = 0; c < keys; c++) {
        PairKind p = cls[size_t(r) * keys + c] = pair_kind(i0 + r, j0 + c, v, overlap);
        if ((p == PairKind::window || p == PairKind::both) && s(r, c) > mx) mx = s(r, c), argmax[r] = c;
      }
      // exp over the whole row (Eigen's SIMD exp), then kept only on window pairs; elsewhere it
      // may overflow, and is overwritten.
      a.row(r) = g * (s.row(r).array() - mx).exp();
      for (int c = 0; c < keys; c++) {
        PairKind p = at(r, c);
        if (p != PairKind::window && p != PairKind::both) a(r, c) = 0;
        w(r, c) = a(r, c) + (p == PairKind::linear || p == PairKind::both ? bl(r, c) : T(0));
      }
    }
  }
};

}  // namespace

template <typename T>
void hybrid_attention_forward(T* y, T* Z, const T* q, const T* k, const T* v, const T* phiq,
                              const T* phik, const T* wlogit, int B, int T_, int H, int Hkv, int D,
                              int F, HybridVariant variant, AttentionMask mask) {
  ENSURE(Hkv > 0 && H % Hkv == 0, "hybrid attention: %d heads not a multiple of %d kv heads", H, Hkv);
  const HybridBlocks blocks(T_, variant, mask);
  const int G = H / Hkv, nb = blocks.count();
  const T scale = T(1) / std::sqrt(T(D));
#pragma omp parallel for collapse(2) schedule(dynamic)
  for (int b = 0; b < B; b++)
    for (int h = 0; h < H; h++) {
      const T g = sigmoid(wlogit[h]);
      Mat<T> S = Mat<T>::Zero(F, D);  // state: sum over keys of blocks <= t-2 of phi_k v^T
      Vec<T> zs = Vec<T>::Zero(F);    //        sum of phi_k
      for (int t = 0; t < nb; t++) {
        LocalTile<T> tile(t, blocks);
        const int i0 = tile.i0, rows = tile.rows, j0 = tile.j0, keys = tile.keys;
        auto pq = head(phiq, b, i0, rows, h, T_, H, F);
        auto vloc = head(v, b, j0, keys, h / G, T_, Hkv, D);
        tile.build(head(q, b, i0, rows, h, T_, H, D), head(k, b, j0, keys, h / G, T_, Hkv, D), pq,
                   head(phik, b, j0, keys, h, T_, H, F), scale, g, variant);
        Mat<T> num = tile.w * vloc + pq * S;                 // (rows, D)
        Vec<T> den = tile.w.rowwise().sum() + pq * zs;       // (rows)
        auto yt = head_mut(y, b, i0, rows, h, T_, H, D);
        for (int r = 0; r < rows; r++) {
          yt.row(r) = num.row(r) / den(r);
          Z[(int64_t(b) * H + h) * T_ + i0 + r] = den(r);
        }
        if (t >= 1) {  // block t-1 leaves the window of the next block: fold it into the state
          const int u0 = blocks.begin(t - 1), n = blocks.end(t - 1) - u0;
          auto pk = head(phik, b, u0, n, h, T_, H, F);
          S.noalias() += pk.transpose() * head(v, b, u0, n, h / G, T_, Hkv, D);
          zs += pk.colwise().sum().transpose();
        }
      }
    }
}

template <typename T>
void hybrid_attention_backward(T* dq, T* dk, T* dv, T* dphiq, T* dphik, T* dwlogit, const T* dy,
                               const T* y, const T* Z, const T* q, const T* k,
                               const T* v, const T* phiq, const T* phik, const T* wlogit, int B,
                               int T_, int H, int Hkv, int D, int F, HybridVariant variant,
                               AttentionMask mask) {
  const HybridBlocks blocks(T_, variant, mask);
  const int G = H / Hkv, nb = blocks.count();
  const T scale = T(1) / std::sqrt(T(D));
  // One task per (batch, kv head): it owns dk/dv of that head for its G query heads.
#pragma omp parallel for collapse(2) schedule(dynamic)
  for (int b = 0; b < B; b++)
    for (int gk = 0; gk < Hkv; gk++) {
      Mat<T> dk_acc = Mat<T>::Zero(T_, D), dv_acc = Mat<T>::Zero(T_, D);
      for (int h = gk * G; h < (gk + 1) * G; h++) {
        const T g = sigmoid(wlogit[h]);
        auto yh = head(y, b, 0, T_, h, T_, H, D);
        auto dyh = head(dy, b, 0, T_, h, T_, H, D);
        auto PQ = head(phiq, b, 0, T_, h, T_, H, F);
        auto PK = head(phik, b, 0, T_, h, T_, H, F);
        auto Vh = head(v, b, 0, T_, gk, T_, Hkv, D);
        Mat<T> dN(T_, D), dq_h = Mat<T>::Zero(T_, D), dPQ = Mat<T>::Zero(T_, F), dPK = Mat<T>::Zero(T_, F);
        Vec<T> dZ(T_);
        for (int i = 0; i < T_; i++) {
          T Zi = Z[(int64_t(b) * H + h) * T_ + i];
          dN.row(i) = dyh.row(i) / Zi;
          dZ(i) = -dyh.row(i).dot(yh.row(i)) / Zi;
        }
        T dwl = 0;
        // 1. The exact local tiles.
        for (int t = 0; t < nb; t++) {
          LocalTile<T> tile(t, blocks);
          const int i0 = tile.i0, rows = tile.rows, j0 = tile.j0, keys = tile.keys;
          auto qt = head(q, b, i0, rows, h, T_, H, D);
          auto kloc = head(k, b, j0, keys, gk, T_, Hkv, D);
          auto pq = PQ.middleRows(i0, rows);
          auto pk = PK.middleRows(j0, keys);
          tile.build(qt, kloc, pq, pk, scale, g, variant);
          Mat<T> dw = dN.middleRows(i0, rows) * Vh.middleRows(j0, keys).transpose();
          dw.colwise() += dZ.segment(i0, rows);
          dv_acc.middleRows(j0, keys).noalias() += tile.w.transpose() * dN.middleRows(i0, rows);
          Mat<T> ds = Mat<T>::Zero(rows, keys), dB = Mat<T>::Zero(rows, keys);
          for (int r = 0; r < rows; r++) {
            T row_sum = 0;
            for (int c = 0; c < keys; c++) {
              PairKind p = tile.at(r, c);
              if (p == PairKind::window || p == PairKind::both) row_sum += (ds(r, c) = dw(r, c) * tile.a(r, c));
              if (p == PairKind::linear || p == PairKind::both) dB(r, c) = dw(r, c);
            }
            dwl += row_sum * (T(1) - g);
            if (tile.argmax[r] >= 0) ds(r, tile.argmax[r]) -= row_sum;  // through m_i = max
          }
          if (variant != HybridVariant::linear) {
            dq_h.middleRows(i0, rows).noalias() += scale * (ds * kloc);
            dk_acc.middleRows(j0, keys).noalias() += scale * (ds.transpose() * qt);
          }
          if (variant != HybridVariant::terrace || blocks.overlap) {
            dPQ.middleRows(i0, rows).noalias() += dB * pk;
            dPK.middleRows(j0, keys).noalias() += dB.transpose() * pq;
          }
        }
        // 2. The state, forward: queries of block t read S, z over key blocks <= t-2.
        Mat<T> S = Mat<T>::Zero(F, D);
        Vec<T> zs = Vec<T>::Zero(F);
        for (int t = 0; t < nb; t++) {
          const int i0 = blocks.begin(t), rows = blocks.end(t) - i0;
          dPQ.middleRows(i0, rows).noalias() += dN.middleRows(i0, rows) * S.transpose();
          dPQ.middleRows(i0, rows).noalias() += dZ.segment(i0, rows) * zs.transpose();
          if (t >= 1) {
            const int u0 = blocks.begin(t - 1), n = blocks.end(t - 1) - u0;
            S.noalias() += PK.middleRows(u0, n).transpose() * Vh.middleRows(u0, n);
            zs += PK.middleRows(u0, n).colwise().sum().transpose();
          }
        }
        // 3. The state, backward: key block u is read by query blocks >= u+2.
        Mat<T> P = Mat<T>::Zero(F, D);
        Vec<T> p = Vec<T>::Zero(F);
        for (int u = nb - 1; u >= 0; u--) {
          if (u + 2 < nb) {
            const int i0 = blocks.begin(u + 2), rows = blocks.end(u + 2) - i0;
            P.noalias() += PQ.middleRows(i0, rows).transpose() * dN.middleRows(i0, rows);
            p.noalias() += PQ.middleRows(i0, rows).transpose() * dZ.segment(i0, rows);
          }
          const int j0 = blocks.begin(u), rows = blocks.end(u) - j0;
          dPK.middleRows(j0, rows).noalias() += Vh.middleRows(j0, rows) * P.transpose();
          dPK.middleRows(j0, rows).rowwise() += p.transpose();
          dv_acc.middleRows(j0, rows).noalias() += PK.middleRows(j0, rows) * P;
        }
        if (dq) head_mut(dq, b, 0, T_, h, T_, H, D) = dq_h;
        if (dphiq) head_mut(dphiq, b, 0, T_, h, T_, H, F) = dPQ;
        if (dphik) head_mut(dphik, b, 0, T_, h, T_, H, F) = dPK;
        if (dwlogit && variant != HybridVariant::linear) {
#pragma omp atomic
          dwlogit[h] += dwl;
        }
      }
      if (dk) head_mut(dk, b, 0, T_, gk, T_, Hkv, D) = dk_acc;
      if (dv) head_mut(dv, b, 0, T_, gk, T_, Hkv, D) = dv_acc;
    }
}

#define INSTANTIATE(T)                                                                             \
  template void hybrid_attention_forward<T>(T*, T*, const T*, const T*, const T*, const T*,        \
                                            const T*, const T*, int, int, int, int, int, int,      \
                                            HybridVariant, AttentionMask);                         \
  template void hybrid_attention_backward<T>(T*, T*, T*, T*, T*, T*, const T*, const T*, const T*, \
                                             const T*, const T*, const T*, const T*, const T*,     \
                                             const T*, int, int, int, int, int, int,               \
                                             HybridVariant, AttentionMask);
INSTANTIATE(float)
INSTANTIATE(double)


// ---- Tensor-level entry points ---------------------------------------------------------------------
// q, k, v, y and their gradients: f32 (cpu), f32 or bf16 (cuda); the features, Z, the window logits and
// their gradients: f32 everywhere.

namespace {
float* opt(Tensor* t) { return t ? t->f32() : nullptr; }
float* dev_opt(Tensor* t) { return t ? t->dev<float>() : nullptr; }
template <typename T>
T* dev_opt(Tensor* t) { return t ? t->dev<T>() : nullptr; }

struct HybridDims { int B, T, H, Hkv, D, F; };
// Checks devices, dtypes and shapes; returns the sizes and (in `cpu`) whether on the CPU.
HybridDims check_hybrid(const char* op, bool& cpu, std::initializer_list<const Tensor*> acts,
                        std::initializer_list<const Tensor*> f32s, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& phiq, const Tensor& phik, const Tensor& Z, const Tensor& wlogit) {
  cpu = check_operands(op, acts);
  ENSURE(check_devices(op, f32s) == cpu, "%s: operands live on different devices", op);
  for (const Tensor* t : f32s)
    ENSURE(!t || !t->defined() || t->dtype() == DType::f32, "%s: features, Z and window logits are f32, not %s",
           op, t->str().c_str());
  ENSURE(q.ndim() == 4 && k.ndim() == 4 && phiq.ndim() == 4, "%s: q %s, k %s, phi %s must be 4-D", op,
         q.shape().str().c_str(), k.shape().str().c_str(), phiq.shape().str().c_str());
  HybridDims d{int(q.size(0)), int(q.size(1)), int(q.size(2)), int(k.size(2)), int(q.size(3)), int(phiq.size(3))};
  check_shape(k, {d.B, d.T, d.Hkv, d.D}, "hybrid attention k", q.dtype());
  check_shape(v, {d.B, d.T, d.Hkv, d.D}, "hybrid attention v", q.dtype());
  check_shape(phiq, {d.B, d.T, d.H, d.F}, "hybrid attention phi_q");
  check_shape(phik, {d.B, d.T, d.H, d.F}, "hybrid attention phi_k");
  check_shape(Z, {d.B, d.H, d.T}, "hybrid attention Z");
  ENSURE(wlogit.numel() == d.H, "%s: %lld window logits for %d heads", op, (long long)wlogit.numel(), d.H);
  return d;
}

// The forward's FLOPs for the op profile: per query, QK^T and AV over a window counted as a full
// 64-token block, phi_q S and phi_q z; per key, its term of the state, phi_k v^T. (The backward is
// counted as 2.5 times this, as for softmax attention.)
double hybrid_flops(const HybridDims& d) {
  return double(d.B) * d.H * d.T * (4.0 * kHybridBlock * d.D + 4.0 * d.F * (d.D + 1));
}

// The cuda kernels know the paper's blocks only; the reference mask is for scoring on the CPU.
void refuse_reference_mask_on_cuda(int T, HybridVariant variant, AttentionMask mask) {
  const HybridBlocks b(T, variant, mask);
  ENSURE(b.offset == 0 && !b.overlap, "hybrid attention: the reference mask (T = %d) runs on the CPU only", T);
}
}  // namespace

void hybrid_attention_forward(Tensor& y, Tensor& Z, const Tensor& q, const Tensor& k, const Tensor& v,
                              const Tensor& phiq, const Tensor& phik, const Tensor& wlogit, HybridVariant variant,
                              AttentionMask mask) {
  bool cpu = false;
  HybridDims d = check_hybrid("hybrid_attention", cpu, {&y, &q, &k, &v}, {&Z, &phiq, &phik, &wlogit}, q, k, v,
                              phiq, phik, Z, wlogit);
  check_same_shape("hybrid_attention", y, q);
  if (cpu)
    return hybrid_attention_forward(y.f32(), Z.f32(), q.f32(), k.f32(), v.f32(), phiq.f32(), phik.f32(),
                                    wlogit.f32(), d.B, d.T, d.H, d.Hkv, d.D, d.F, variant, mask);
  refuse_reference_mask_on_cuda(d.T, variant, mask);
  OpTimer timer(OpKind::hybrid_attention, hybrid_flops(d), op_bytes({&y, &Z, &q, &k, &v, &phiq, &phik}));
  ON_CUDA(q.dtype(), T,
          cuda::hybrid_attention_forward(y.dev<T>(), Z.dev<float>(), q.dev<T>(), k.dev<T>(), v.dev<T>(),
                                         phiq.dev<float>(), phik.dev<float>(), wlogit.dev<float>(), d.B, d.T, d.H,
                                         d.Hkv, d.D, d.F, variant, nullptr));
}

void hybrid_attention_backward(Tensor* dq, Tensor* dk, Tensor* dv, Tensor* dphiq, Tensor* dphik, Tensor* dwlogit,
                               const Tensor& dy, const Tensor& y, const Tensor& Z, const Tensor& q, const Tensor& k,
                               const Tensor& v, const Tensor& phiq, const Tensor& phik, const Tensor& wlogit,
                               HybridVariant variant, AttentionMask mask) {
  bool cpu = false;
  HybridDims d = check_hybrid("hybrid_attention backward", cpu, {dq, dk, dv, &dy, &y, &q, &k, &v},
                              {dphiq, dphik, dwlogit, &Z, &phiq, &phik, &wlogit}, q, k, v, phiq, phik, Z, wlogit);
  check_same_shape("hybrid_attention backward", dy, q);
  if (cpu)
    return hybrid_attention_backward(opt(dq), opt(dk), opt(dv), opt(dphiq), opt(dphik), opt(dwlogit), dy.f32(),
                                     y.f32(), Z.f32(), q.f32(), k.f32(), v.f32(), phiq.f32(), phik.f32(),
                                     wlogit.f32(), d.B, d.T, d.H, d.Hkv, d.D, d.F, variant, mask);
  refuse_reference_mask_on_cuda(d.T, variant, mask);
  OpTimer timer(OpKind::hybrid_attention, 2.5 * hybrid_flops(d),
                op_bytes({dq, dk, dv, dphiq, dphik, &dy, &y, &Z, &q, &k, &v, &phiq, &phik}));
  ON_CUDA(q.dtype(), T,
          cuda::hybrid_attention_backward(dev_opt<T>(dq), dev_opt<T>(dk), dev_opt<T>(dv), dev_opt(dphiq),
                                          dev_opt(dphik), dev_opt(dwlogit), dy.dev<T>(), y.dev<T>(), Z.dev<float>(),
                                          q.dev<T>(), k.dev<T>(), v.dev<T>(), phiq.dev<float>(), phik.dev<float>(),
                                          wlogit.dev<float>(), d.B, d.T, d.H, d.Hkv, d.D, d.F, variant,
                                          nullptr));
}

}  // namespace lolcats
