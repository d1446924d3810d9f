// Differentiable ops on Vars: each runs the forward of the op layer (tensor/*.h: Tensor-level entry
// points that check shapes, dtypes and devices and call the CPU kernel or its CUDA twin) and records
// a closure that calls the matching backward. Outputs take the input's dtype and device; a loss is a
// (1) f32 tensor, on the device for the two a training step takes there (mse, lm_head_cross_entropy:
// nothing waits for the device until it is read), its gradient a host scalar. Gradients follow the
// rule of Grad (autograd/tape.h).
#pragma once
#include <functional>
#include "autograd/tape.h"
#include "tensor/matmul_options.h"
#include "tensor/rope.h"

namespace lolcats {

// a (M, K) @ b (K, N) -> (M, N), or batched (Bt, M, K) @ (Bt, K, N); Transpose::a / b / both
// transposes the last two dims of the *stored* operand (tensor/matmul.h).
Var matmul(const Var& a, const Var& b, Transpose t = Transpose::none);
// x (..., in), w (out, in) -> (..., out) = x w^T            PyTorch: F.linear(x, w)
Var linear(const Var& x, const Var& w);

// Same values, new shape (no copy); the gradient is reshaped back.
Var reshape(const Var& x, const Shape& shape);

Var add(const Var& a, const Var& b);  // same shapes
Var mul(const Var& a, const Var& b);  // same shapes
Var scale(const Var& a, float s);
Var silu(const Var& x);
Var swiglu(const Var& gate, const Var& up);  // silu(gate) * up

// idx (N) or (B, T) i32, wte (V, C) -> (..., C)
Var embedding(const Tensor& idx, const Var& wte);
// x (..., C), w (C) -> (..., C)
Var rmsnorm(const Var& x, const Var& w, float eps);
// x (B, T, H, D); cos/sin tables (T, D/2) from rope_tables()
Var rope(const Var& x, const Tensor& cos_t, const Tensor& sin_t, RopeLayout layout);
// q (B, T, H, D), k/v (B, T, Hkv, D) -> (B, T, H, D), causal, scale 1/sqrt(D)
Var attention(const Var& q, const Var& k, const Var& v);

// logits (N, V), targets (N) i32 -> scalar mean over rows whose target != ignore_index
Var cross_entropy(const Var& logits, const Tensor& targets, int ignore_index = -100);
// x (..., C), w (V, C) the LM head, targets (N) i32 with N = numel(x) / C: the mean cross-entropy of
// the logits x w^T, fused: on the cuda device the (N, V) logits are never whole in memory. Host
// targets are checked and uploaded here (upload them at the step's start, checked_targets, so the
// upload does not wait on the device).
Var lm_head_cross_entropy(const Var& x, const Var& w, const Tensor& targets, int ignore_index = -100);
Var mse(const Var& a, const Var& b);  // scalar mean((a - b)^2) on their device; a loss root (host gradient)
Var sum(const Var& x);                // scalar
Var mean(const Var& x);               // scalar

// The scalar value of a (1-element) Var.
float item(const Var& v);

// Activation recomputation (gradient checkpointing): y = fn(x), keeping only x. The forward runs fn
// without a graph; the backward runs it again with one, from a fresh leaf holding x's value, and
// back-propagates y's gradient through it, so the parameters fn uses receive their gradients then,
// and x its own. `params` lists those parameters (fn reads them by itself; listing them tells the
// graph that y depends on them). The recomputed forward is the same arithmetic on the same values:
// gradients equal those without recomputation bit for bit. fn must own what it captures (it runs
// again after the caller has returned).
Var checkpoint(std::function<Var(const Var&)> fn, const Var& x, const std::vector<Var>& params);

// Whether a loop keeps every layer's activations for the backward (no) or only each layer's
// input, running the layer again in the backward (layers: checkpoint above): same gradients bit
// for bit, about a third more compute, one layer's activations alive at a time. Chosen by whoever
// writes the loop.
enum class Recompute { no, layers };
// fn(x), or checkpoint(fn, x, params) with Recompute::layers.
Var recomputed(Recompute recompute, std::function<Var(const Var&)> fn, const Var& x, const std::vector<Var>& params);

}  // namespace lolcats
