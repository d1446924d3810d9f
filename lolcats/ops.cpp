#include "lolcats/ops.h"

#include "lolcats/feature_map.h"
#include "lolcats/hybrid_attention.h"

namespace lolcats {

Var hedgehog(const Var& x, const Var& W) {
  const Shape &sx = x->value.shape(), &sw = W->value.shape();
  ENSURE(sx.ndim == 4 && sw.ndim == 3 && sw[1] == sx[3],
         "hedgehog: input %s does not fit feature-map weight %s (H, D, Fh)", sx.str().c_str(),
         sw.str().c_str());
  Tensor phi = Tensor::empty({sx[0], sx[1], sw[0], 2 * sw[2]}, DType::f32, x->value.device());  // f32 features
  hedgehog_forward(phi, x->value, W->value);
  return make_node(phi, {x, W}, "hedgehog", [=](Node& n) {
    Grad dx(x, Grad::writes), dW(W, Grad::adds);
    hedgehog_backward(dx.out(), dW.out(), n.grad, phi, x->value, W->value);
    dx.done();
  });
}

Var t2r(const Var& x, const Var& W, const Var& b) {
  const Shape &sx = x->value.shape(), &sw = W->value.shape();
  ENSURE(sx.ndim == 4 && sw.ndim == 3 && sw[1] == sx[3] && b->value.numel() == sw[0] * sw[2],
         "t2r: input %s, weight %s (H, D, F) and bias %s (H, F) do not fit", sx.str().c_str(),
         sw.str().c_str(), b->value.shape().str().c_str());
  Tensor phi = Tensor::empty({sx[0], sx[1], sw[0], sw[2]}, DType::f32, x->value.device());
  t2r_forward(phi, x->value, W->value, b->value);
  return make_node(phi, {x, W, b}, "t2r", [=](Node& n) {
    Grad dx(x, Grad::writes), dW(W, Grad::adds), db(b, Grad::adds);
    t2r_backward(dx.out(), dW.out(), db.out(), n.grad, phi, x->value, W->value);
    dx.done();
  });
}

Var hybrid_attention(const Var& q, const Var& k, const Var& v, const Var& phiq, const Var& phik,
                     const Var& wlogit, HybridVariant variant, AttentionMask mask) {
  const Shape &sq = q->value.shape(), &sk = k->value.shape(), &sp = phiq->value.shape();
  ENSURE(sq.ndim == 4 && sk.ndim == 4 && sp.ndim == 4, "hybrid_attention: q %s, k %s, phi %s must be 4-D",
         sq.str().c_str(), sk.str().c_str(), sp.str().c_str());
  int B = int(sq[0]), T = int(sq[1]), H = int(sq[2]), D = int(sq[3]);
  ENSURE(sk[0] == B && sk[1] == T && sk[3] == D && v->value.shape() == sk && sp[0] == B &&
             sp[1] == T && sp[2] == H && phik->value.shape() == sp && wlogit->value.numel() == H,
         "hybrid_attention: shapes disagree: q %s k %s v %s phiq %s phik %s w %s", sq.str().c_str(),
         sk.str().c_str(), v->value.shape().str().c_str(), sp.str().c_str(),
         phik->value.shape().str().c_str(), wlogit->value.shape().str().c_str());
  Tensor y = Tensor::empty(sq, q->value.dtype(), q->value.device());
  Tensor Z = Tensor::empty({B, H, T}, DType::f32, q->value.device());
  hybrid_attention_forward(y, Z, q->value, k->value, v->value, phiq->value, phik->value, wlogit->value, variant, mask);
  return make_node(y, {q, k, v, phiq, phik, wlogit}, "hybrid_attention", [=](Node& n) {
    Grad dq(q, Grad::writes), dk(k, Grad::writes), dv(v, Grad::writes), dpq(phiq, Grad::writes),
        dpk(phik, Grad::writes), dw(wlogit, Grad::adds);
    hybrid_attention_backward(dq.out(), dk.out(), dv.out(), dpq.out(), dpk.out(), dw.out(), n.grad, y, Z,
                              q->value, k->value, v->value, phiq->value, phik->value, wlogit->value, variant,
                              mask);
    dq.done();
    dk.done();
    dv.done();
    dpq.done();
    dpk.done();
  });
}

}  // namespace lolcats
