#include "autograd/tape.h"

#include <unordered_set>

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

GradSink::GradSink(const Var& v) : node_(v.get()) {
  if (!node_ || !node_->requires_grad) return;
  if (!node_->grad.defined() && !node_->is_leaf) {
    node_->grad = Tensor::empty(node_->value.shape());  // first contribution: written in place
    target_ = node_->grad.f32();
  } else {
    scratch_ = Tensor::empty(node_->value.shape());
    target_ = scratch_.f32();
  }
}

void GradSink::commit() {
  if (!scratch_.defined()) return;
  if (!node_->grad.defined()) node_->grad = Tensor::zeros(node_->value.shape());
  float* g = node_->grad.f32();
  add_forward(g, g, scratch_.f32(), node_->grad.numel());
}

float* accum(const Var& v) {
  if (!v || !v->requires_grad) return nullptr;
  if (!v->grad.defined()) v->grad = Tensor::zeros(v->value.shape());
  return v->grad.f32();
}

GradTarget grad_target(const Var& v) {
  if (!v || !v->requires_grad) return {};
  if (!v->grad.defined() && !v->is_leaf) {
    v->grad = Tensor::empty(v->value.shape());
    return {v->grad.f32(), false};
  }
  return {accum(v), true};
}

void zero_grad(const Var& param) {
  if (param->grad.defined()) param->grad.zero_();
}

void backward(const Var& loss, float seed) {
  ENSURE(loss->value.numel() == 1, "backward() needs a scalar loss, got shape %s",
        loss->value.shape().str().c_str());
  ENSURE(loss->requires_grad, "backward(): the loss does not depend on any parameter");
  // Topological order by iterative depth-first search (a 30-layer model is too deep to recurse
  // comfortably once every op is a node).
  std::vector<Var> order;  // owning: freeing a node's parents below must not free a node we visit later
  std::unordered_set<Node*> seen;
  std::vector<std::pair<Var, size_t>> stack{{loss, 0}};
  seen.insert(loss.get());
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
  Tensor seed_grad = Tensor::from({seed}, loss->value.shape());
  if (loss->grad.defined())
    loss->grad.f32()[0] += seed;
  else
    loss->grad = seed_grad;
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

}  // namespace lolcats
