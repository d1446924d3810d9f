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
//     scratch buffer and are added (see GradSink).
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

// Where a backward kernel puts the gradient of one input:
//   - an input that needs no gradient: ptr() is null, the kernel skips it;
//   - an activation seen for the first time: ptr() is its fresh grad buffer, the kernel writes (=);
//   - a parameter or an already-written activation: ptr() is a scratch buffer the kernel writes,
//     and commit() adds it into the real gradient.
// Kernels that accumulate by contract (parameter gradients such as rmsnorm's dw) use accum()
// instead: the node's own zero-initialised buffer, added into directly.
class GradSink {
 public:
  explicit GradSink(const Var& v);
  float* ptr() { return target_; }
  void commit();
 private:
  Node* node_;
  Tensor scratch_;
  float* target_ = nullptr;
};
float* accum(const Var& v);  // null when v needs no gradient

// For kernels that can either write or add (matmul): the gradient buffer of v itself, and whether
// the kernel must add into it (it already holds a contribution, or v is a parameter) or may write.
struct GradTarget {
  float* ptr = nullptr;  // null when v needs no gradient
  bool accumulate = false;
};
GradTarget grad_target(const Var& v);

}  // namespace lolcats
