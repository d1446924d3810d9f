#include "autograd/tape.h"

#include <unordered_set>

#include "tensor/device.h"
#include "tensor/elementwise.h"

namespace lolcats {

static thread_local bool g_grad_enabled = true;

NoGrad::NoGrad() : prev_(g_grad_enabled) { g_grad_enabled = false; }
NoGrad::~NoGrad() { g_grad_enabled = prev_; }
bool grad_enabled() { return g_grad_enabled; }

Var leaf(Tensor value, bool requires_grad) {
  auto n = std::make_shared<Node>();
  n->value = std::move(value);
  n->requires_grad = requires_grad;
  return n;
}

Var make_node(Tensor value, std::vector<Var> parents, const char* op,
              std::function<void(Node&)> fn) {
  auto n = std::make_shared<Node>();
  n->value = std::move(value);
  n->op = op;
  n->is_leaf = false;
  bool needs = false;
  for (const Var& p : parents) needs = needs || (p && p->requires_grad);
  if (g_grad_enabled && needs) {
    n->requires_grad = true;
    n->parents = std::move(parents);
    n->backward_fn = std::move(fn);
  }
  return n;
}

DType grad_dtype(const Node& n) { return n.is_leaf ? DType::f32 : n.value.dtype(); }

static Tensor fresh_grad(const Node& n, bool zeroed) {
  if (n.grad_slot.defined()) {
    Tensor g = n.grad_slot;
    if (zeroed) g.zero_();
    return g;
  }
  return zeroed ? Tensor::zeros(n.value.shape(), grad_dtype(n), n.value.device())
                : Tensor::empty(n.value.shape(), grad_dtype(n), n.value.device());
}

Grad::Grad(const Var& v, Kernel kernel) : node_(v.get()) {
  if (!node_ || !node_->requires_grad) return;
  Node& n = *node_;
  if (kernel == adds) {
    if (!n.grad.defined()) n.grad = fresh_grad(n, true);
    target_ = n.grad;
  } else if (kernel == either) {
    add_ = n.grad.defined();
    if (!add_) n.grad = fresh_grad(n, false);
    target_ = n.grad;
  } else if (!n.grad.defined() && grad_dtype(n) == n.value.dtype()) {
    n.grad = fresh_grad(n, false);  // the first contribution: written in place
    target_ = n.grad;
  } else {
    // A writing kernel computes in the value's dtype; its result is added in by done().
    target_ = Tensor::empty(n.value.shape(), n.value.dtype(), n.value.device());
    scratch_ = true;
  }
}

void Grad::done() {
  if (!scratch_) return;
  Node& n = *node_;
  if (!n.grad.defined()) n.grad = fresh_grad(n, true);
  Tensor contribution = target_.to(n.grad.device(), n.grad.dtype());
  add_forward(n.grad, n.grad, contribution);
  target_ = Tensor();
  scratch_ = false;
}

void zero_grad(const Var& param) {
  if (param->grad.defined()) param->grad.zero_();
}

namespace {

// Runs every closure from `root` (whose gradient is already set) back to the leaves.
void run_backward(const Var& root) {
  // Topological order by iterative depth-first search (a 30-layer model is too deep to recurse
  // comfortably once every op is a node).
  std::vector<Var> order;  // owning: freeing a node's parents below must not free a node we visit later
  std::unordered_set<Node*> seen;
  std::vector<std::pair<Var, size_t>> stack{{root, 0}};
  seen.insert(root.get());
  while (!stack.empty()) {
    auto& [node, next] = stack.back();
    if (next < node->parents.size()) {
      Var p = node->parents[next++];
      if (p && p->requires_grad && !seen.count(p.get())) {
        seen.insert(p.get());
        stack.push_back({p, 0});
      }
    } else {
      order.push_back(node);
      stack.pop_back();
    }
  }
  // `order` lists every node after its parents; walk it backwards.
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    Node* n = it->get();
    if (n->is_leaf || !n->grad.defined()) continue;
    n->backward_fn(*n);
    // Like PyTorch, a graph is used once: free the gradient and everything the closure saved.
    n->grad = Tensor();
    n->backward_fn = nullptr;
    n->parents.clear();
  }
}

}  // namespace

void backward(const Var& loss, float seed) {
  ENSURE(loss->value.numel() == 1, "backward() needs a scalar loss, got shape %s",
        loss->value.shape().str().c_str());
  ENSURE(loss->requires_grad, "backward(): the loss does not depend on any parameter");
  // A loss's gradient is a host scalar on every device (the ops' backward read it there); its value
  // may stay on the device (mse), so seeding it waits for nothing.
  if (loss->grad.defined())
    loss->grad.f32()[0] += seed;
  else
    loss->grad = Tensor::from({seed}, loss->value.shape());
  run_backward(loss);
}

void backward(const Var& out, const Tensor& grad) {
  ENSURE(out->requires_grad, "backward(): the output does not depend on any parameter");
  check_same_shape("backward", grad, out->value);
  out->grad = grad;
  run_backward(out);
}

}  // namespace lolcats
