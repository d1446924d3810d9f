#include "lolcats/ops.h"

#include "lolcats/feature_map.h"

namespace lolcats {

Var hedgehog(const Var& x, const Var& W) {
  const Shape &sx = x->value.shape(), &sw = W->value.shape();
  ENSURE(sx.ndim == 4 && sw.ndim == 3 && sw[1] == sx[3],
         "hedgehog: input %s does not fit feature-map weight %s (H, D, Fh)", sx.str().c_str(),
         sw.str().c_str());
  int B = int(sx[0]), T = int(sx[1]), Hx = int(sx[2]), D = int(sx[3]), H = int(sw[0]), Fh = int(sw[2]);
  Tensor phi = Tensor::empty({B, T, H, 2 * Fh});
  hedgehog_forward(phi.f32(), x->value.f32(), W->value.f32(), B, T, H, Hx, D, Fh);
  return make_node(phi, {x, W}, "hedgehog", [=](Node& n) {
    GradSink dx(x);
    hedgehog_backward(dx.ptr(), accum(W), n.grad.f32(), phi.f32(), x->value.f32(), W->value.f32(), B,
                      T, H, Hx, D, Fh);
    dx.commit();
  });
}

Var t2r(const Var& x, const Var& W, const Var& b) {
  const Shape &sx = x->value.shape(), &sw = W->value.shape();
  ENSURE(sx.ndim == 4 && sw.ndim == 3 && sw[1] == sx[3] && b->value.numel() == sw[0] * sw[2],
         "t2r: input %s, weight %s (H, D, F) and bias %s (H, F) do not fit", sx.str().c_str(),
         sw.str().c_str(), b->value.shape().str().c_str());
  int B = int(sx[0]), T = int(sx[1]), Hx = int(sx[2]), D = int(sx[3]), H = int(sw[0]), F = int(sw[2]);
  Tensor phi = Tensor::empty({B, T, H, F});
  t2r_forward(phi.f32(), x->value.f32(), W->value.f32(), b->value.f32(), B, T, H, Hx, D, F);
  return make_node(phi, {x, W, b}, "t2r", [=](Node& n) {
    GradSink dx(x);
    t2r_backward(dx.ptr(), accum(W), accum(b), n.grad.f32(), phi.f32(), x->value.f32(), W->value.f32(), B,
                 T, H, Hx, D, F);
    dx.commit();
  });
}

Var hybrid_attention(const Var& q, const Var& k, const Var& v, const Var& phiq, const Var& phik,
                     const Var& wlogit, HybridVariant variant) {
  const Shape &sq = q->value.shape(), &sk = k->value.shape(), &sp = phiq->value.shape();
  ENSURE(sq.ndim == 4 && sk.ndim == 4 && sp.ndim == 4, "hybrid_attention: q %s, k %s, phi %s must be 4-D",
         sq.str().c_str(), sk.str().c_str(), sp.str().c_str());
  int B = int(sq[0]), T = int(sq[1]), H = int(sq[2]), D = int(sq[3]), Hkv = int(sk[2]), F = int(sp[3]);
  ENSURE(sk[0] == B && sk[1] == T && sk[3] == D && v->value.shape() == sk && sp[0] == B &&
             sp[1] == T && sp[2] == H && phik->value.shape() == sp && wlogit->value.numel() == H,
         "hybrid_attention: shapes disagree: q %s k %s v %s phiq %s phik %s w %s", sq.str().c_str(),
         sk.str().c_str(), v->value.shape().str().c_str(), sp.str().c_str(),
         phik->value.shape().str().c_str(), wlogit->value.shape().str().c_str());
  Tensor y = Tensor::empty(sq), Z = Tensor::empty({B, H, T});
  hybrid_attention_forward(y.f32(), Z.f32(), q->value.f32(), k->value.f32(), v->value.f32(),
                           phiq->value.f32(), phik->value.f32(), wlogit->value.f32(), B, T, H, Hkv,
                           D, F, variant);
  return make_node(y, {q, k, v, phiq, phik, wlogit}, "hybrid_attention", [=](Node& n) {
    GradSink dq(q), dk(k), dv(v), dpq(phiq), dpk(phik);
    hybrid_attention_backward(dq.ptr(), dk.ptr(), dv.ptr(), dpq.ptr(), dpk.ptr(), accum(wlogit),
                              n.grad.f32(), y.f32(), Z.f32(), q->value.f32(), k->value.f32(),
                              v->value.f32(), phiq->value.f32(), phik->value.f32(),
                              wlogit->value.f32(), B, T, H, Hkv, D, F, variant);
    dq.commit();
    dk.commit();
    dv.commit();
    dpq.commit();
    dpk.commit();
  });
}

}  // namespace lolcats
