// The autograd tape, micrograd-sized.
//
// A Var is a node of the computation graph: a value, an optional gradient, the Vars it was computed
// from, and a closure that pushes its gradient to them by calling the op's hand-written backward
// kernel (tensor/*.h). backward(loss) orders the graph topologically and runs the closures in
// reverse. There is no graph compiler and no generic derivative rule: the math lives in the kernels.
//
// Gradient convention (stated once, used everywhere):
//   * parameter gradients ACCUMULATE (+=): a leaf's grad buffer is created zeroed and keeps adding
//     up across backward() calls (gradient accumulation) until zero_grad();
//   * activation gradients are WRITTEN (=): the first consumer's backward writes the buffer; if a
//     value feeds several ops (fan-out, e.g. the residual stream), later contributions go through a
//     scratch buffer and are added (see Grad below).
//   * frozen weights (requires_grad = false) have no gradient buffer at all.
// Inside a NoGrad scope no graph is recorded (teachers, evaluation, generation).
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace lolcats {

struct Node;
using Var = std::shared_ptr<Node>;

struct Node {
  Tensor value;
  Tensor grad;                  // undefined until a gradient arrives
  Tensor grad_slot;             // where that gradient is put when it arrives (an optimizer's
                                // gradients arena), or undefined: a fresh buffer
  bool requires_grad = false;   // this value needs a gradient (a parameter, or depends on one)
  bool is_leaf = true;          // created by the user, not by an op
  std::vector<Var> parents;     // inputs of the op that made this node
  std::function<void(Node&)> backward_fn;  // pushes `grad` into the parents
  const char* op = "leaf";
};

// A leaf: a parameter (requires_grad) or a constant input.
Var leaf(Tensor value, bool requires_grad = false);

// Runs the backward pass from a scalar (numel 1) loss; d loss = `seed` (1 by default).
// Intermediate gradients are released as soon as they have been used.
void backward(const Var& loss, float seed = 1.0f);

// The same from a non-scalar output with a given gradient (of its shape, in its gradient's dtype):
// what activation recomputation (checkpoint, autograd/ops.h) runs inside a layer.
void backward(const Var& out, const Tensor& grad);

// Clears a parameter's accumulated gradient.
void zero_grad(const Var& param);

// Scope in which ops record nothing (values only).
class NoGrad {
 public:
  NoGrad();
  ~NoGrad();
  NoGrad(const NoGrad&) = delete;
  NoGrad& operator=(const NoGrad&) = delete;

 private:
  bool prev_;
};
bool grad_enabled();

// ---- helpers for writing ops (autograd/ops.cpp) ----------------------------------------------------

// Makes the node of an op's output. It records `parents` and `fn` only when grad mode is on and some
// parent requires a gradient; otherwise the result is a plain constant.
Var make_node(Tensor value, std::vector<Var> parents, const char* op,
              std::function<void(Node&)> fn);

// Where a backward kernel puts the gradient of one input. One rule: each backward kernel either
// WRITES its gradient output (=; activation gradients) or ADDS to it (+=; parameter gradients, by
// the convention stated at the top), or can do either when told (matmul):
//   Grad dx(x, Grad::writes);  kernel(dx.out(), ...);  dx.done();
// - x needs no gradient: out() is null and the kernel skips that output;
// - adds: out() is x's gradient buffer itself (created zeroed on first use);
// - writes: x's first gradient is written straight into its fresh buffer; any later one (a value
//   used twice, a parameter accumulating over backward calls) goes to scratch that done() adds in;
// - either: out() is the gradient buffer; add() says whether the kernel must add into it.
// A gradient lives on its value's device; trainable leaves keep it in f32 (the master precision
// of mixed-precision training), everything else in the value's dtype.
class Grad {
 public:
  enum Kernel { writes, adds, either };
  Grad(const Var& v, Kernel kernel);
  Tensor* out() { return target_.defined() ? &target_ : nullptr; }
  bool add() const { return add_; }
  void done();  // after the kernel: adds the scratch in (writes), else nothing

 private:
  Node* node_ = nullptr;
  Tensor target_;
  bool add_ = false, scratch_ = false;
};

// The dtype a gradient of `n` is kept in (see Grad).
DType grad_dtype(const Node& n);

}  // namespace lolcats
