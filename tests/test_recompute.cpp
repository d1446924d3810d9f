// Activation recomputation (autograd checkpoint, Recompute::layers) against the plain graph:
// the same loss and the same gradients, bit for bit, for the Llama with LoRA and for the LoLCATs
// student (hybrid attention inside the recomputed layers); and it stays out of no-grad forwards.
#include <cstring>

#include "autograd/ops.h"
#include "lolcats/model.h"
#include "tests/helpers.h"

using namespace lolcats;

namespace {

struct Result {
  float loss;
  std::vector<std::vector<float>> grads;
};

// LoRA on every projection, with B made nonzero so that every LoRA matrix gets a gradient, and one
// norm weight trainable too (a parameter that is not LoRA).
Result loss_and_grads(bool recompute, bool lolcats_student) {
  auto base = Llama::load(lolcats_test::fixture_dir() + "/tiny_llama");
  auto lora = base->add_lora(4, 8.0f, {"q", "k", "v", "o"}, 3);
  for (auto& [name, v] : lora)
    if (name.find("lora_B") != std::string::npos)
      for (int64_t i = 0; i < v->value.numel(); i++) v->value.f32()[i] = 0.01f * float((i * 37) % 11 - 5);
  base->layers[1].mlp_norm->requires_grad = true;
  LolcatsModel m(*base, LolcatsConfig{});
  for (const Var& p : m.parameters()) p->requires_grad = false;  // stage 2: feature maps frozen
  std::vector<int32_t> ids(130), targets(130);
  for (int i = 0; i < 130; i++) ids[i] = (i * 7919) % base->cfg.vocab, targets[i] = (i * 31 + 1) % base->cfg.vocab;
  Tensor tid = Tensor::from_i32(ids, {1, 130}), tt = Tensor::from_i32(targets, {130});
  const Recompute how = recompute ? Recompute::layers : Recompute::no;
  Var loss = lolcats_student ? m.loss(tid, tt, how) : base->forward_loss(tid, tt, how);
  backward(loss);
  Result r{item(loss), {}};
  for (auto& [name, v] : lora) r.grads.push_back(v->grad.to_vector());
  r.grads.push_back(base->layers[1].mlp_norm->grad.to_vector());
  return r;
}

}  // namespace

TEST_CASE("recomputed layers give the plain graph's loss and gradients bit for bit", "[autograd][recompute]") {
  for (bool student : {false, true}) {
    INFO((student ? "LoLCATs student (hybrid attention)" : "Llama"));
    Result plain = loss_and_grads(false, student), again = loss_and_grads(true, student);
    CHECK(plain.loss == again.loss);
    REQUIRE(plain.grads.size() == again.grads.size());
    for (size_t i = 0; i < plain.grads.size(); i++) {
      INFO("parameter " << i);
      REQUIRE(!plain.grads[i].empty());
      bool nonzero = false;
      for (float g : plain.grads[i]) nonzero |= g != 0;
      CHECK(nonzero);  // the comparison means something: this parameter did get a gradient
      CHECK(std::memcmp(plain.grads[i].data(), again.grads[i].data(), plain.grads[i].size() * sizeof(float)) == 0);
    }
  }
}

TEST_CASE("checkpoint: the input's gradient and a parameter's, against the plain graph", "[autograd][recompute]") {
  // y = sum(tanh-free polynomial of x and w): fn(x) = (x * w) * x, so dy/dx = 2 x w and dy/dw = x^2.
  auto make = [] {
    Var x = leaf(Tensor::from({0.5f, -1.5f, 2.0f}, {3}), true);
    Var w = leaf(Tensor::from({3.0f, 0.25f, -2.0f}, {3}), true);
    return std::pair{x, w};
  };
  auto [x1, w1] = make();
  backward(sum(mul(mul(x1, w1), x1)));
  auto [x2, w2] = make();
  Var y = checkpoint([w2 = w2](const Var& h) { return mul(mul(h, w2), h); }, x2, {w2});
  backward(sum(y));
  CHECK(x2->grad.to_vector() == x1->grad.to_vector());
  CHECK(w2->grad.to_vector() == w1->grad.to_vector());
  CHECK(x1->grad.to_vector() == std::vector<float>{2 * 0.5f * 3.0f, 2 * -1.5f * 0.25f, 2 * 2.0f * -2.0f});
}
