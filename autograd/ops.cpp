#include "autograd/ops.h"

#include <cstring>

#include "tensor/attention.h"
#include "tensor/elementwise.h"
#include "tensor/embedding.h"
#include "tensor/loss.h"
#include "tensor/matmul.h"
#include "tensor/rmsnorm.h"

namespace lolcats {

namespace {

const Tensor& val(const Var& v) { return v->value; }
float* fp(const Var& v) { return v->value.f32(); }

void same_shape(const Var& a, const Var& b, const char* op) {
  ENSURE(val(a).shape() == val(b).shape(), "%s: shapes differ: %s vs %s", op,
        val(a).shape().str().c_str(), val(b).shape().str().c_str());
}

Tensor scalar(double x) { return Tensor::from({float(x)}, {1}); }

// Shape with the last dimension replaced.
Shape with_last(const Shape& s, int64_t last) {
  Shape r = s;
  r.dims[r.ndim - 1] = last;
  return r;
}

}  // namespace

float item(const Var& v) {
  ENSURE(val(v).numel() == 1, "item(): tensor has %lld elements", (long long)val(v).numel());
  return fp(v)[0];
}

Var matmul(const Var& a, const Var& b, bool ta, bool tb) {
  const Shape &sa = val(a).shape(), &sb = val(b).shape();
  ENSURE(sa.ndim == sb.ndim && (sa.ndim == 2 || sa.ndim == 3), "matmul: operands %s and %s",
        sa.str().c_str(), sb.str().c_str());
  int nd = sa.ndim, batch = nd == 3 ? int(sa[0]) : 1;
  ENSURE(nd == 2 || sb[0] == sa[0], "matmul: batch sizes differ: %s vs %s", sa.str().c_str(),
        sb.str().c_str());
  int M = int(ta ? sa[nd - 1] : sa[nd - 2]), K = int(ta ? sa[nd - 2] : sa[nd - 1]);
  int Kb = int(tb ? sb[nd - 1] : sb[nd - 2]), N = int(tb ? sb[nd - 2] : sb[nd - 1]);
  ENSURE(K == Kb, "matmul: inner dimensions differ: %s%s @ %s%s", sa.str().c_str(), ta ? "^T" : "",
        sb.str().c_str(), tb ? "^T" : "");
  Tensor out = Tensor::empty(nd == 3 ? Shape{batch, M, N} : Shape{M, N});
  matmul_forward(out.f32(), fp(a), fp(b), batch, M, N, K, ta, tb, false);
  return make_node(out, {a, b}, "matmul", [=](Node& n) {
    GradTarget da = grad_target(a), db = grad_target(b);
    matmul_backward(da.ptr, db.ptr, n.grad.f32(), fp(a), fp(b), batch, M, N, K, ta, tb,
                    da.accumulate, db.accumulate);
  });
}

Var linear(const Var& x, const Var& w) {
  const Shape& sx = val(x).shape();
  ENSURE(val(w).ndim() == 2 && sx.ndim >= 1 && sx[sx.ndim - 1] == val(w).size(1),
        "linear: input %s does not fit weight %s (out, in)", sx.str().c_str(),
        val(w).shape().str().c_str());
  int in = int(val(w).size(1)), out_f = int(val(w).size(0)), N = int(val(x).numel() / in);
  Tensor out = Tensor::empty(with_last(sx, out_f));
  matmul_forward(out.f32(), fp(x), fp(w), 1, N, out_f, in, false, true, false);
  return make_node(out, {x, w}, "linear", [=](Node& n) {
    GradTarget dx = grad_target(x), dw = grad_target(w);
    matmul_backward(dx.ptr, dw.ptr, n.grad.f32(), fp(x), fp(w), 1, N, out_f, in, false, true,
                    dx.accumulate, dw.accumulate);
  });
}

Var reshape(const Var& x, const Shape& shape) {
  Tensor out = val(x).reshape(shape);
  return make_node(out, {x}, "reshape", [=](Node& n) {
    GradSink dx(x);
    std::memcpy(dx.ptr(), n.grad.f32(), n.grad.nbytes());
    dx.commit();
  });
}

Var add(const Var& a, const Var& b) {
  same_shape(a, b, "add");
  Tensor out = Tensor::empty(val(a).shape());
  add_forward(out.f32(), fp(a), fp(b), out.numel());
  return make_node(out, {a, b}, "add", [=](Node& n) {
    GradSink da(a), db(b);
    add_backward(da.ptr(), db.ptr(), n.grad.f32(), n.grad.numel());
    da.commit();
    db.commit();
  });
}

Var mul(const Var& a, const Var& b) {
  same_shape(a, b, "mul");
  Tensor out = Tensor::empty(val(a).shape());
  mul_forward(out.f32(), fp(a), fp(b), out.numel());
  return make_node(out, {a, b}, "mul", [=](Node& n) {
    GradSink da(a), db(b);
    mul_backward(da.ptr(), db.ptr(), n.grad.f32(), fp(a), fp(b), n.grad.numel());
    da.commit();
    db.commit();
  });
}

Var scale(const Var& a, float s) {
  Tensor out = Tensor::empty(val(a).shape());
  scale_forward(out.f32(), fp(a), s, out.numel());
  return make_node(out, {a}, "scale", [=](Node& n) {
    GradSink da(a);
    scale_backward(da.ptr(), n.grad.f32(), s, n.grad.numel());
    da.commit();
  });
}

Var silu(const Var& x) {
  Tensor out = Tensor::empty(val(x).shape());
  silu_forward(out.f32(), fp(x), out.numel());
  return make_node(out, {x}, "silu", [=](Node& n) {
    GradSink dx(x);
    silu_backward(dx.ptr(), n.grad.f32(), fp(x), n.grad.numel());
    dx.commit();
  });
}

Var swiglu(const Var& gate, const Var& up) {
  same_shape(gate, up, "swiglu");
  Tensor out = Tensor::empty(val(gate).shape());
  swiglu_forward(out.f32(), fp(gate), fp(up), out.numel());
  return make_node(out, {gate, up}, "swiglu", [=](Node& n) {
    GradSink dg(gate), du(up);
    swiglu_backward(dg.ptr(), du.ptr(), n.grad.f32(), fp(gate), fp(up), n.grad.numel());
    dg.commit();
    du.commit();
  });
}

Var embedding(const Tensor& idx, const Var& wte) {
  ENSURE(idx.dtype() == DType::i32, "embedding: token ids must be i32, got %s", dtype_name(idx.dtype()));
  ENSURE(val(wte).ndim() == 2, "embedding: table must be (V, C), got %s", val(wte).shape().str().c_str());
  int V = int(val(wte).size(0)), C = int(val(wte).size(1)), N = int(idx.numel());
  std::vector<int64_t> dims(idx.shape().dims, idx.shape().dims + idx.ndim());
  dims.push_back(C);
  Tensor out = Tensor::empty(Shape(dims));
  embedding_forward(out.f32(), idx.i32(), fp(wte), N, V, C);
  return make_node(out, {wte}, "embedding", [=](Node& n) {
    embedding_backward(accum(wte), n.grad.f32(), idx.i32(), N, V, C);
  });
}

Var rmsnorm(const Var& x, const Var& w, float eps) {
  int C = int(val(x).size(-1)), N = int(val(x).numel() / C);
  check_shape(val(w), {C}, "rmsnorm weight");
  Tensor out = Tensor::empty(val(x).shape()), rstd = Tensor::empty({N});
  rmsnorm_forward(out.f32(), rstd.f32(), fp(x), fp(w), N, C, eps);
  return make_node(out, {x, w}, "rmsnorm", [=](Node& n) {
    GradSink dx(x);
    rmsnorm_backward(dx.ptr(), accum(w), n.grad.f32(), fp(x), fp(w), rstd.f32(), N, C);
    dx.commit();
  });
}

Var rope(const Var& x, const Tensor& cos_t, const Tensor& sin_t, RopeLayout layout) {
  const Shape& s = val(x).shape();
  ENSURE(s.ndim == 4, "rope: input must be (B, T, H, D), got %s", s.str().c_str());
  int B = int(s[0]), T = int(s[1]), H = int(s[2]), D = int(s[3]);
  check_shape(cos_t, {T, D / 2}, "rope cos table");
  check_shape(sin_t, {T, D / 2}, "rope sin table");
  Tensor out = Tensor::empty(s);
  rope_forward(out.f32(), fp(x), cos_t.f32(), sin_t.f32(), B, T, H, D, layout);
  return make_node(out, {x}, "rope", [=](Node& n) {
    GradSink dx(x);
    rope_backward(dx.ptr(), n.grad.f32(), cos_t.f32(), sin_t.f32(), B, T, H, D, layout);
    dx.commit();
  });
}

Var attention(const Var& q, const Var& k, const Var& v) {
  const Shape &sq = val(q).shape(), &sk = val(k).shape();
  ENSURE(sq.ndim == 4 && sk.ndim == 4, "attention: q %s and k %s must be (B, T, heads, D)",
        sq.str().c_str(), sk.str().c_str());
  same_shape(k, v, "attention k/v");
  int B = int(sq[0]), T = int(sq[1]), H = int(sq[2]), D = int(sq[3]), Hkv = int(sk[2]);
  ENSURE(sk[0] == B && sk[1] == T && sk[3] == D && H % Hkv == 0,
        "attention: q %s does not match k/v %s", sq.str().c_str(), sk.str().c_str());
  Tensor out = Tensor::empty(sq), lse = Tensor::empty({B, H, T});
  attention_forward(out.f32(), lse.f32(), fp(q), fp(k), fp(v), B, T, H, Hkv, D);
  return make_node(out, {q, k, v}, "attention", [=](Node& n) {
    // The kernel needs all three buffers; gradients nobody asked for land in scratch and vanish.
    GradSink dq(q), dk(k), dv(v);
    Tensor tq, tk, tv;
    float* pq = dq.ptr() ? dq.ptr() : (tq = Tensor::empty(sq)).f32();
    float* pk = dk.ptr() ? dk.ptr() : (tk = Tensor::empty(sk)).f32();
    float* pv = dv.ptr() ? dv.ptr() : (tv = Tensor::empty(sk)).f32();
    attention_backward(pq, pk, pv, n.grad.f32(), out.f32(), lse.f32(), fp(q), fp(k), fp(v), B, T,
                       H, Hkv, D);
    dq.commit();
    dk.commit();
    dv.commit();
  });
}

Var cross_entropy(const Var& logits, const Tensor& targets, int ignore_index) {
  ENSURE(val(logits).ndim() == 2, "cross_entropy: logits must be (N, V), got %s",
        val(logits).shape().str().c_str());
  int N = int(val(logits).size(0)), V = int(val(logits).size(1));
  check_shape(targets, {N}, "cross_entropy targets", DType::i32);
  Tensor lse = Tensor::empty({N});
  double loss = cross_entropy_forward(lse.f32(), fp(logits), targets.i32(), N, V, ignore_index);
  return make_node(scalar(loss), {logits}, "cross_entropy", [=](Node& n) {
    GradSink dl(logits);
    cross_entropy_backward(dl.ptr(), n.grad.f32()[0], fp(logits), lse.f32(), targets.i32(), N, V,
                           ignore_index);
    dl.commit();
  });
}

Var mse(const Var& a, const Var& b) {
  same_shape(a, b, "mse");
  int64_t n_el = val(a).numel();
  return make_node(scalar(mse_forward(fp(a), fp(b), n_el)), {a, b}, "mse", [=](Node& n) {
    GradSink da(a), db(b);
    mse_backward(da.ptr(), db.ptr(), n.grad.f32()[0], fp(a), fp(b), n_el);
    da.commit();
    db.commit();
  });
}

Var sum(const Var& x) {
  int64_t n_el = val(x).numel();
  return make_node(scalar(sum_forward(fp(x), n_el)), {x}, "sum", [=](Node& n) {
    GradSink dx(x);
    sum_backward(dx.ptr(), n.grad.f32()[0], n_el);
    dx.commit();
  });
}

Var mean(const Var& x) {
  int64_t n_el = val(x).numel();
  return make_node(scalar(mean_forward(fp(x), n_el)), {x}, "mean", [=](Node& n) {
    GradSink dx(x);
    mean_backward(dx.ptr(), n.grad.f32()[0], n_el);
    dx.commit();
  });
}

}  // namespace lolcats
