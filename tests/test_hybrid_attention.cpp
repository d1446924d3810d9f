// LoLCATs hybrid attention: the linear-time kernels against the O(T^2) definition (forward and
// every gradient, all variants, T up to 1024), and every backward against finite differences.
#include "autograd/gradcheck.h"
#include "lolcats/feature_map.h"
#include "lolcats/hybrid_attention.h"
#include "lolcats/hybrid_reference.h"
#include "tests/helpers.h"

using namespace lolcats;
using V = std::vector<double>;

namespace {

struct Dims { int B, T, H, Hkv, D, Fh; int F() const { return 2 * Fh; } };

// Random q, k, v, hedgehog features of them, window logits.
struct Inputs {
  V q, k, v, phiq, phik, wlogit;
  Inputs(const Dims& d, uint64_t seed) {
    q = random_normal(int64_t(d.B) * d.T * d.H * d.D, seed + 1);
    k = random_normal(int64_t(d.B) * d.T * d.Hkv * d.D, seed + 2);
    v = random_normal(int64_t(d.B) * d.T * d.Hkv * d.D, seed + 3);
    V Wq = random_normal(int64_t(d.H) * d.D * d.Fh, seed + 4, 0.5);
    V Wk = random_normal(int64_t(d.H) * d.D * d.Fh, seed + 5, 0.5);
    phiq.resize(int64_t(d.B) * d.T * d.H * d.F());
    phik.resize(phiq.size());
    hedgehog_forward(phiq.data(), q.data(), Wq.data(), d.B, d.T, d.H, d.H, d.D, d.Fh);
    hedgehog_forward(phik.data(), k.data(), Wk.data(), d.B, d.T, d.H, d.Hkv, d.D, d.Fh);
    wlogit = random_normal(d.H, seed + 6);
  }
};

// The O(T^2) reference also keeps the window max m (its backward reads it); the linear-time
// kernels rebuild it, so they are called here through the reference's signature.
using FwdKernel = decltype(&hybrid_reference_forward<double>);
using BwdKernel = decltype(&hybrid_reference_backward<double>);
void fast_forward(double* y, double* Z, double*, const double* q, const double* k, const double* v,
                  const double* phiq, const double* phik, const double* w, int B, int T, int H, int Hkv,
                  int D, int F, HybridVariant var, AttentionMask mask) {
  hybrid_attention_forward(y, Z, q, k, v, phiq, phik, w, B, T, H, Hkv, D, F, var, mask);
}
void fast_backward(double* dq, double* dk, double* dv, double* dphiq, double* dphik, double* dw,
                   const double* dy, const double* y, const double* Z, const double*, const double* q,
                   const double* k, const double* v, const double* phiq, const double* phik,
                   const double* w, int B, int T, int H, int Hkv, int D, int F, HybridVariant var,
                   AttentionMask mask) {
  hybrid_attention_backward(dq, dk, dv, dphiq, dphik, dw, dy, y, Z, q, k, v, phiq, phik, w, B, T, H, Hkv,
                            D, F, var, mask);
}

struct Result { V y, Z, m, dq, dk, dv, dphiq, dphik, dw; };

Result run(FwdKernel fwd, BwdKernel bwd, const Dims& d, const Inputs& in, const V& dy, HybridVariant var,
           AttentionMask mask = AttentionMask::paper) {
  Result r;
  int64_t nq = int64_t(d.B) * d.T * d.H * d.D, nkv = int64_t(d.B) * d.T * d.Hkv * d.D,
          nphi = int64_t(d.B) * d.T * d.H * d.F(), nbht = int64_t(d.B) * d.H * d.T;
  r.y.resize(nq), r.Z.resize(nbht), r.m.resize(nbht);
  fwd(r.y.data(), r.Z.data(), r.m.data(), in.q.data(), in.k.data(), in.v.data(), in.phiq.data(),
      in.phik.data(), in.wlogit.data(), d.B, d.T, d.H, d.Hkv, d.D, d.F(), var, mask);
  r.dq.resize(nq), r.dk.resize(nkv), r.dv.resize(nkv), r.dphiq.resize(nphi), r.dphik.resize(nphi);
  r.dw.assign(d.H, 0.0);
  bwd(r.dq.data(), r.dk.data(), r.dv.data(), r.dphiq.data(), r.dphik.data(), r.dw.data(), dy.data(),
      r.y.data(), r.Z.data(), r.m.data(), in.q.data(), in.k.data(), in.v.data(), in.phiq.data(),
      in.phik.data(), in.wlogit.data(), d.B, d.T, d.H, d.Hkv, d.D, d.F(), var, mask);
  return r;
}

}  // namespace

TEST_CASE("hybrid attention: linear-time form equals the O(T^2) definition", "[lolcats][hybrid]") {
  // Every variant under the paper's mask; terrace also under the reference implementation's (blocks
  // aligned to the end: T = 100, 200, 1000 leave a short first block; T <= 64: window pairs are
  // linear pairs too; sw and linear do not depend on the mask).
  struct Rule { HybridVariant var; AttentionMask mask; };
  for (Rule rule : {Rule{HybridVariant::terrace, AttentionMask::paper}, Rule{HybridVariant::sw, AttentionMask::paper},
                    Rule{HybridVariant::linear, AttentionMask::paper},
                    Rule{HybridVariant::terrace, AttentionMask::reference}})
    for (int T : {1, 37, 64, 65, 100, 200, 1000, 1024}) {
      const HybridVariant var = rule.var;
      INFO(variant_name(var) << (rule.mask == AttentionMask::reference ? " (reference mask)" : "") << " T=" << T);
      Dims d{T > 200 ? 1 : 2, T, 4, 2, 16, 8};
      Inputs in(d, uint64_t(T));
      V dy = random_normal(int64_t(d.B) * T * d.H * d.D, 99);
      Result fast = run(fast_forward, fast_backward, d, in, dy, var, rule.mask);
      Result ref = run(hybrid_reference_forward<double>, hybrid_reference_backward<double>, d, in, dy, var,
                       rule.mask);
      // Both in double, summing the same terms in different orders: 1e-10 relative.
      const double a = 1e-11, r = 1e-10;
      CHECK_CLOSE("y", fast.y, ref.y, a, r);
      CHECK_CLOSE("Z", fast.Z, ref.Z, a, r);
      CHECK_CLOSE("dq", fast.dq, ref.dq, a, r);
      CHECK_CLOSE("dk", fast.dk, ref.dk, a, r);
      CHECK_CLOSE("dv", fast.dv, ref.dv, a, r);
      CHECK_CLOSE("dphiq", fast.dphiq, ref.dphiq, a, r);
      CHECK_CLOSE("dphik", fast.dphik, ref.dphik, a, r);
      CHECK_CLOSE("dwlogit", fast.dw, ref.dw, a, r);
    }
}

TEST_CASE("hybrid attention: float kernel tracks the double definition", "[lolcats][hybrid]") {
  Dims d{1, 300, 4, 2, 16, 8};
  Inputs in(d, 5);
  std::vector<float> q(in.q.begin(), in.q.end()), k(in.k.begin(), in.k.end()), v(in.v.begin(), in.v.end()),
      pq(in.phiq.begin(), in.phiq.end()), pk(in.phik.begin(), in.phik.end()), w(in.wlogit.begin(), in.wlogit.end());
  std::vector<float> y(q.size()), Z(d.H * d.T);
  V yr(q.size()), Zr(Z.size()), mr(Z.size());
  for (HybridVariant var : {HybridVariant::terrace, HybridVariant::sw, HybridVariant::linear}) {
    hybrid_attention_forward(y.data(), Z.data(), q.data(), k.data(), v.data(), pq.data(), pk.data(),
                             w.data(), d.B, d.T, d.H, d.Hkv, d.D, d.F(), var);
    hybrid_reference_forward(yr.data(), Zr.data(), mr.data(), in.q.data(), in.k.data(), in.v.data(),
                             in.phiq.data(), in.phik.data(), in.wlogit.data(), d.B, d.T, d.H, d.Hkv, d.D,
                             d.F(), var);
    // float32 with sums over <= 300 keys of weights <= 1: 1e-5.
    CHECK_CLOSE(std::string("float y ") + variant_name(var), y, yr, 1e-5, 1e-5);
  }
}

TEST_CASE("hybrid attention: gradients match finite differences", "[lolcats][hybrid][fd]") {
  // T = 140 spans three blocks, so the state, the local tiles and both scans all carry gradient.
  // The reference mask (terrace only): T = 140 (end-aligned: the first block holds 12 tokens) and
  // T = 40 (window and linear pairs overlap).
  struct Rule { HybridVariant var; AttentionMask mask; int T; };
  for (Rule rule : {Rule{HybridVariant::terrace, AttentionMask::paper, 140}, Rule{HybridVariant::sw, AttentionMask::paper, 140},
                    Rule{HybridVariant::linear, AttentionMask::paper, 140},
                    Rule{HybridVariant::terrace, AttentionMask::reference, 140},
                    Rule{HybridVariant::terrace, AttentionMask::reference, 40}}) {
    const HybridVariant var = rule.var;
    const AttentionMask mask = rule.mask;
    const Dims d{1, rule.T, 2, 1, 4, 3};
    INFO(variant_name(var) << (mask == AttentionMask::reference ? " (reference mask)" : "") << " T=" << d.T);
    Inputs in(d, 7);
    auto pack = [&](const Buffers& b, V& y, V& Z) {
      y.resize(b[0].size()), Z.resize(d.H * d.T);
      hybrid_attention_forward(y.data(), Z.data(), b[0].data(), b[1].data(), b[2].data(), b[3].data(),
                               b[4].data(), b[5].data(), d.B, d.T, d.H, d.Hkv, d.D, d.F(), var, mask);
    };
    auto f = [&](const Buffers& b) { V y, Z; pack(b, y, Z); return y; };
    auto bw = [&](const Buffers& b, const V& dy) {
      V y, Z;
      pack(b, y, Z);
      Buffers g{V(b[0].size()), V(b[1].size()), V(b[2].size()), V(b[3].size()), V(b[4].size()), V(d.H, 0.0)};
      hybrid_attention_backward(g[0].data(), g[1].data(), g[2].data(), g[3].data(), g[4].data(), g[5].data(),
                                dy.data(), y.data(), Z.data(), b[0].data(), b[1].data(), b[2].data(),
                                b[3].data(), b[4].data(), b[5].data(), d.B, d.T, d.H, d.Hkv, d.D, d.F(), var,
                                mask);
      if (var == HybridVariant::linear) g[5].clear();  // no window, no mixing factor
      return g;
    };
    GradCheckResult r = gradcheck(f, bw, {in.q, in.k, in.v, in.phiq, in.phik, in.wlogit}, 3);
    INFO(r.report);
    CHECK(r.ok);
  }
}

TEST_CASE("feature maps: hedgehog and T2R gradients match finite differences", "[lolcats][fd]") {
  const int B = 2, T = 3, H = 4, Hx = 2, D = 5, Fh = 3;
  V prior = random_normal(H * D * Fh, 40);  // dW accumulates on top of what is there
  auto f = [&](const Buffers& in) {
    V phi(B * T * H * 2 * Fh);
    hedgehog_forward(phi.data(), in[0].data(), in[1].data(), B, T, H, Hx, D, Fh);
    return phi;
  };
  auto b = [&](const Buffers& in, const V& dphi) {
    V phi = f(in);
    Buffers g{V(in[0].size()), prior};
    hedgehog_backward(g[0].data(), g[1].data(), dphi.data(), phi.data(), in[0].data(), in[1].data(), B, T, H, Hx,
                      D, Fh);
    for (size_t i = 0; i < prior.size(); i++) g[1][i] -= prior[i];
    return g;
  };
  GradCheckResult r = gradcheck(f, b, {random_normal(B * T * Hx * D, 41), random_normal(H * D * Fh, 42)}, 4);
  INFO(r.report);
  CHECK(r.ok);

  const int F = 6;
  auto ft = [&](const Buffers& in) {
    V phi(B * T * H * F);
    t2r_forward(phi.data(), in[0].data(), in[1].data(), in[2].data(), B, T, H, Hx, D, F);
    return phi;
  };
  auto bt = [&](const Buffers& in, const V& dphi) {
    V phi = ft(in);
    Buffers g{V(in[0].size()), V(in[1].size(), 0.0), V(in[2].size(), 0.0)};
    t2r_backward(g[0].data(), g[1].data(), g[2].data(), dphi.data(), phi.data(), in[0].data(), in[1].data(), B, T,
                 H, Hx, D, F);
    return g;
  };
  GradCheckResult rt = gradcheck(ft, bt, {random_normal(B * T * Hx * D, 43), random_normal(H * D * F, 44),
                                          random_normal(H * F, 45)}, 5);
  INFO(rt.report);
  CHECK(rt.ok);
}

TEST_CASE("feature maps: hedgehog identity init gives softmax of the first Fh dims", "[lolcats]") {
  const int D = 4, Fh = 2;
  std::vector<float> W(D * Fh), x = {1.0f, 2.0f, -3.0f, 0.5f}, phi(2 * Fh);
  hedgehog_identity_init(W.data(), 1, D, Fh);
  hedgehog_forward(phi.data(), x.data(), W.data(), 1, 1, 1, 1, D, Fh);
  // softmax([1, 2]) and softmax([-1, -2]), by hand
  double e = std::exp(1.0);
  CHECK(phi[0] == Approx(1 / (1 + e)));
  CHECK(phi[1] == Approx(e / (1 + e)));
  CHECK(phi[2] == Approx(e / (1 + e)));
  CHECK(phi[3] == Approx(1 / (1 + e)));
}
