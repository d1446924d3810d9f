#include "autograd/ops.h"

#include "tensor/attention.h"
#include "tensor/elementwise.h"
#include "tensor/embedding.h"
#include "tensor/loss.h"
#include "tensor/matmul.h"
#include "tensor/rmsnorm.h"

namespace lolcats {

namespace {

const Tensor& val(const Var& v) { return v->value; }

void same_shape(const Var& a, const Var& b, const char* op) {
  ENSURE(val(a).shape() == val(b).shape(), "%s: shapes differ: %s vs %s", op,
        val(a).shape().str().c_str(), val(b).shape().str().c_str());
}

// Host scalars, for the losses computed on the CPU (the device's mse and lm_head_cross_entropy keep
// theirs on the device). backward() seeds every loss's gradient on the CPU, and the backward kernels
// take dloss as a number.
Tensor scalar(double x) { return Tensor::from({float(x)}, {1}); }

// An output of `x`'s dtype and device.
Tensor like(const Tensor& x, const Shape& shape) { return Tensor::empty(shape, x.dtype(), x.device()); }
Tensor like(const Tensor& x) { return like(x, x.shape()); }

// Gives v the gradient g unchanged (copied in, or added to what v already has).
void pass_gradient(const Var& v, const Tensor& g) {
  Grad d(v, Grad::either);
  if (!d.out()) return;
  Tensor gv = g.to(d.out()->device(), d.out()->dtype());
  if (d.add()) add_forward(*d.out(), *d.out(), gv);
  else d.out()->copy_from(gv, "gradient");
}

// Shape with the last dimension replaced.
Shape with_last(const Shape& s, int64_t last) {
  Shape r = s;
  r.dims[r.ndim - 1] = last;
  return r;
}

}  // namespace

float item(const Var& v) {
  ENSURE(val(v).numel() == 1, "item(): tensor has %lld elements", (long long)val(v).numel());
  return val(v).to_vector()[0];
}

Var matmul(const Var& a, const Var& b, Transpose t) {
  const bool ta = transposes_a(t), tb = transposes_b(t);
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
  Tensor out = like(val(a), nd == 3 ? Shape{batch, M, N} : Shape{M, N});
  matmul_forward(out, val(a), val(b), batch, M, N, K, t);
  return make_node(out, {a, b}, "matmul", [=](Node& n) {
    Grad da(a, Grad::either), db(b, Grad::either);
    matmul_backward(da.out(), db.out(), n.grad, val(a), val(b), batch, M, N, K, t, accumulate_if(da.add()),
                    accumulate_if(db.add()));
  });
}

Var linear(const Var& x, const Var& w) {
  const Shape& sx = val(x).shape();
  ENSURE(val(w).ndim() == 2 && sx.ndim >= 1 && sx[sx.ndim - 1] == val(w).size(1),
        "linear: input %s does not fit weight %s (out, in)", sx.str().c_str(),
        val(w).shape().str().c_str());
  int in = int(val(w).size(1)), out_f = int(val(w).size(0)), N = int(val(x).numel() / in);
  Tensor out = like(val(x), with_last(sx, out_f));
  matmul_forward(out, val(x), val(w), 1, N, out_f, in, Transpose::b);  // x w^T
  return make_node(out, {x, w}, "linear", [=](Node& n) {
    Grad dx(x, Grad::either), dw(w, Grad::either);
    matmul_backward(dx.out(), dw.out(), n.grad, val(x), val(w), 1, N, out_f, in, Transpose::b,
                    accumulate_if(dx.add()), accumulate_if(dw.add()));
  });
}

Var reshape(const Var& x, const Shape& shape) {
  Tensor out = val(x).reshape(shape);
  return make_node(out, {x}, "reshape", [=](Node& n) {
    // The gradient is the same values under x's shape.
    pass_gradient(x, n.grad.reshape(val(x).shape()));
  });
}

Var add(const Var& a, const Var& b) {
  same_shape(a, b, "add");
  Tensor out = like(val(a));
  add_forward(out, val(a), val(b));
  return make_node(out, {a, b}, "add", [=](Node& n) {
    // d(a + b) = dy for both: no kernel, the gradient itself is passed on.
    pass_gradient(a, n.grad);
    pass_gradient(b, n.grad);
  });
}

Var mul(const Var& a, const Var& b) {
  same_shape(a, b, "mul");
  Tensor out = like(val(a));
  mul_forward(out, val(a), val(b));
  return make_node(out, {a, b}, "mul", [=](Node& n) {
    Grad da(a, Grad::writes), db(b, Grad::writes);
    mul_backward(da.out(), db.out(), n.grad, val(a), val(b));
    da.done();
    db.done();
  });
}

Var scale(const Var& a, float s) {
  Tensor out = like(val(a));
  scale_forward(out, val(a), s);
  return make_node(out, {a}, "scale", [=](Node& n) {
    Grad da(a, Grad::writes);
    if (da.out()) scale_forward(*da.out(), n.grad, s);  // d(s a) = s dy
    da.done();
  });
}

Var silu(const Var& x) {
  Tensor out = like(val(x));
  silu_forward(out, val(x));
  return make_node(out, {x}, "silu", [=](Node& n) {
    Grad dx(x, Grad::writes);
    if (dx.out()) silu_backward(*dx.out(), n.grad, val(x));
    dx.done();
  });
}

Var swiglu(const Var& gate, const Var& up) {
  same_shape(gate, up, "swiglu");
  Tensor out = like(val(gate));
  swiglu_forward(out, val(gate), val(up));
  return make_node(out, {gate, up}, "swiglu", [=](Node& n) {
    Grad dg(gate, Grad::writes), du(up, Grad::writes);
    swiglu_backward(dg.out(), du.out(), n.grad, val(gate), val(up));
    dg.done();
    du.done();
  });
}

Var embedding(const Tensor& idx, const Var& wte) {
  ENSURE(val(wte).ndim() == 2, "embedding: table must be (V, C), got %s", val(wte).shape().str().c_str());
  std::vector<int64_t> dims(idx.shape().dims, idx.shape().dims + idx.ndim());
  dims.push_back(val(wte).size(1));
  Tensor out = like(val(wte), Shape(dims));
  embedding_forward(out, idx, val(wte));
  return make_node(out, {wte}, "embedding", [=](Node& n) {
    Grad dw(wte, Grad::adds);
    if (dw.out()) embedding_backward(*dw.out(), n.grad, idx);
  });
}

Var rmsnorm(const Var& x, const Var& w, float eps) {
  int C = int(val(x).size(-1)), N = int(val(x).numel() / C);
  Tensor out = like(val(x)), rstd = Tensor::empty({N}, DType::f32, val(x).device());
  rmsnorm_forward(out, rstd, val(x), val(w), eps);
  return make_node(out, {x, w}, "rmsnorm", [=](Node& n) {
    Grad dx(x, Grad::writes), dw(w, Grad::adds);
    rmsnorm_backward(dx.out(), dw.out(), n.grad, val(x), val(w), rstd);
    dx.done();
  });
}

Var rope(const Var& x, const Tensor& cos_t, const Tensor& sin_t, RopeLayout layout) {
  Tensor out = like(val(x));
  rope_forward(out, val(x), cos_t, sin_t, layout);
  return make_node(out, {x}, "rope", [=](Node& n) {
    Grad dx(x, Grad::writes);
    if (dx.out()) rope_backward(*dx.out(), n.grad, cos_t, sin_t, layout);
    dx.done();
  });
}

Var attention(const Var& q, const Var& k, const Var& v) {
  const Shape& sq = val(q).shape();
  ENSURE(sq.ndim == 4, "attention: q %s must be (B, T, H, D)", sq.str().c_str());
  Tensor out = like(val(q)), lse = Tensor::empty({sq[0], sq[2], sq[1]}, DType::f32, val(q).device());
  attention_forward(out, lse, val(q), val(k), val(v));
  return make_node(out, {q, k, v}, "attention", [=](Node& n) {
    // The kernels write all three; gradients nobody asked for land in scratch and vanish.
    Grad dq(q, Grad::writes), dk(k, Grad::writes), dv(v, Grad::writes);
    Tensor sq_ = dq.out() ? Tensor() : like(val(q)), sk = dk.out() ? Tensor() : like(val(k)),
           sv = dv.out() ? Tensor() : like(val(v));
    attention_backward(dq.out() ? *dq.out() : sq_, dk.out() ? *dk.out() : sk, dv.out() ? *dv.out() : sv,
                       n.grad, out, lse, val(q), val(k), val(v));
    dq.done();
    dk.done();
    dv.done();
  });
}

Var cross_entropy(const Var& logits, const Tensor& targets, int ignore_index) {
  ENSURE(val(logits).ndim() == 2, "cross_entropy: logits must be (N, V), got %s",
        val(logits).shape().str().c_str());
  Tensor lse = Tensor::empty({val(logits).size(0)}, DType::f32, val(logits).device());
  double loss = cross_entropy_forward(lse, val(logits), targets, ignore_index);
  return make_node(scalar(loss), {logits}, "cross_entropy", [=](Node& n) {
    Grad dl(logits, Grad::writes);
    if (dl.out()) cross_entropy_backward(*dl.out(), n.grad.f32()[0], val(logits), lse, targets, ignore_index);
    dl.done();
  });
}

Var lm_head_cross_entropy(const Var& x, const Var& w, const Tensor& targets, int ignore_index) {
  int C = int(val(x).size(-1)), N = int(val(x).numel() / C);
  const Device device = val(x).device();
  // Host targets are checked and uploaded here; the trainers upload them where the step begins
  // (Llama::forward_loss), so that neither the forward nor the backward waits on the device.
  Tensor t = checked_targets(targets, int(val(w).size(0)), device, ignore_index);
  Tensor lse = Tensor::empty({N}, DType::f32, device), loss = Tensor::empty({1}, DType::f32, device);
  lm_head_cross_entropy_forward(loss, lse, val(x), val(w), t, ignore_index);
  return make_node(loss, {x, w}, "lm_head_cross_entropy", [=](Node& n) {
    Grad dx(x, Grad::writes), dw(w, Grad::adds);
    lm_head_cross_entropy_backward(dx.out(), dw.out(), n.grad.f32()[0], val(x), val(w), lse, t,
                                   ignore_index);
    dx.done();
  });
}

Var mse(const Var& a, const Var& b) {
  same_shape(a, b, "mse");
  // On the device the loss stays there: a stage-1 step queues every layer's MSE without waiting.
  Tensor loss = Tensor::empty({1}, DType::f32, val(a).device());
  mse_forward(loss, val(a), val(b));
  return make_node(loss, {a, b}, "mse", [=](Node& n) {
    Grad da(a, Grad::writes), db(b, Grad::writes);
    mse_backward(da.out(), db.out(), n.grad.f32()[0], val(a), val(b));
    da.done();
    db.done();
  });
}

Var sum(const Var& x) {
  return make_node(scalar(sum_forward(val(x))), {x}, "sum", [=](Node& n) {
    Grad dx(x, Grad::writes);
    if (dx.out()) sum_backward(*dx.out(), n.grad.f32()[0]);
    dx.done();
  });
}

Var mean(const Var& x) {
  return make_node(scalar(mean_forward(val(x))), {x}, "mean", [=](Node& n) {
    Grad dx(x, Grad::writes);
    if (dx.out()) mean_backward(*dx.out(), n.grad.f32()[0]);
    dx.done();
  });
}

Var recomputed(Recompute recompute, std::function<Var(const Var&)> fn, const Var& x, const std::vector<Var>& params) {
  return recompute == Recompute::layers ? checkpoint(std::move(fn), x, params) : fn(x);
}

Var checkpoint(std::function<Var(const Var&)> fn, const Var& x, const std::vector<Var>& params) {
  Tensor y;
  {
    NoGrad no_graph;  // nothing of fn's inside is kept
    y = fn(leaf(x->value))->value;
  }
  std::vector<Var> parents{x};
  parents.insert(parents.end(), params.begin(), params.end());
  return make_node(y, parents, "checkpoint", [=](Node& n) {
    ENSURE(grad_enabled(), "checkpoint: the backward must run with gradients enabled (not under NoGrad)");
    Var xin = leaf(x->value, x->requires_grad);
    Var out = fn(xin);  // the same forward again, this time with its graph
    if (out->requires_grad) backward(out, n.grad);
    if (!x->requires_grad) return;
    Grad dx(x, Grad::writes);
    if (!xin->grad.defined()) xin->grad = Tensor::zeros(x->value.shape(), x->value.dtype(), x->value.device());
    dx.out()->copy_from(xin->grad.to(dx.out()->device(), dx.out()->dtype()), "checkpoint input gradient");
    dx.done();
  });
}

}  // namespace lolcats
