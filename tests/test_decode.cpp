// The decoder (nn/decoder.h) with the plain-code CPU trunk (nn/decode.h) and a KV cache against
// the model's parallel forward, position by position: a batch of sequences of different lengths,
// fed in prefill chunks of several sizes and single tokens, in the same steps.
#include <random>

#include "autograd/ops.h"
#include "nn/decoder.h"
#include "nn/generate.h"
#include "nn/llama.h"
#include "tests/helpers.h"

using namespace lolcats;
using lolcats_test::fixture_dir;

TEST_CASE("decode: batched chunked prefill and decode equal the parallel forward", "[decode][llama]") {
  auto model = Llama::load(fixture_dir() + "/tiny_llama");
  const int V = model->cfg.vocab;
  const std::vector<int> lengths = {13, 40, 27};
  std::mt19937 rng(5);
  std::vector<std::vector<int32_t>> seqs;
  std::vector<std::vector<float>> want;  // (T, V) logits of each sequence's full forward
  for (int T : lengths) {
    std::vector<int32_t> ids(static_cast<size_t>(T));
    for (int32_t& t : ids) t = int32_t(rng() % uint32_t(V));
    NoGrad ng;
    want.push_back(model->forward(Tensor::from_i32(ids, {1, T}))->value.to_vector());
    seqs.push_back(ids);
  }
  std::unique_ptr<Decoder> dec = make_decoder(*model);
  dec->reserve(3, 40);
  std::vector<float> logits(size_t(3) * V, 0.0f);
  // Per step, how many new tokens each sequence gets: chunks, single tokens, nothing, mixed.
  const std::vector<std::vector<int>> plan = {{5, 7, 0}, {1, 16, 9}, {0, 1, 1}, {7, 10, 17}, {0, 6, 0}};
  std::vector<int> fed(3, 0);
  for (const std::vector<int>& n : plan) {
    std::vector<int32_t> tokens;
    for (int b = 0; b < 3; b++)
      tokens.insert(tokens.end(), seqs[size_t(b)].begin() + fed[size_t(b)], seqs[size_t(b)].begin() + fed[size_t(b)] + n[size_t(b)]);
    dec->step(tokens.data(), n.data(), logits.data());
    for (int b = 0; b < 3; b++) {
      fed[size_t(b)] += n[size_t(b)];
      CHECK(dec->length(b) == fed[size_t(b)]);
      if (n[size_t(b)] == 0) continue;
      int pos = fed[size_t(b)] - 1;
      std::vector<double> w(want[size_t(b)].begin() + size_t(pos) * V, want[size_t(b)].begin() + size_t(pos + 1) * V);
      // Same f32 math as the parallel forward in another order (one row vs a tile): a few ulps.
      CHECK_CLOSE("sequence " + std::to_string(b) + " position " + std::to_string(pos),
                  logits.data() + size_t(b) * V, w, 1e-5, 1e-5);
    }
  }
  CHECK(fed == lengths);
  std::vector<int> n1 = {0, 1, 0};
  int32_t tok = 3;
  REQUIRE_THROWS_WITH(dec->step(&tok, n1.data(), logits.data()),
                      Catch::Contains("sequence 1 holds 40 tokens, 1 more do not fit in 40"));
}

TEST_CASE("decode: bf16 weights give the f32 decode of the same (bf16-rounded) weights", "[decode][llama]") {
  auto f32 = Llama::load(fixture_dir() + "/tiny_llama");
  auto bf16 = Llama::load(fixture_dir() + "/tiny_llama");
  bf16->to(Device::cpu, DType::bf16);
  REQUIRE(bf16->dtype() == DType::bf16);
  // The oracle: the already-tested f32 decode, on weights rounded to exactly the bf16 values.
  for (auto& [name, v] : f32->named_parameters()) v->value.copy_from(v->value.to(Device::cpu, DType::bf16).to(Device::cpu, DType::f32), name);
  const int V = f32->cfg.vocab;
  std::unique_ptr<Decoder> s1 = make_decoder(*f32), s2 = make_decoder(*bf16);
  s1->reserve(2, 30), s2->reserve(2, 30);
  std::vector<float> l1(size_t(2) * V), l2(size_t(2) * V);
  std::mt19937 rng(9);
  for (const std::vector<int>& n : std::vector<std::vector<int>>{{12, 3}, {1, 9}, {1, 1}, {0, 1}, {16, 0}}) {
    std::vector<int32_t> tokens(size_t(n[0] + n[1]));
    for (int32_t& t : tokens) t = int32_t(rng() % uint32_t(V));
    s1->step(tokens.data(), n.data(), l1.data());
    s2->step(tokens.data(), n.data(), l2.data());
    // The same f32 arithmetic on the same weight values, in the same order: to rounding.
    CHECK_CLOSE("bf16-stored weights", l2, std::vector<double>(l1.begin(), l1.end()), 1e-6, 1e-6);
  }
}

TEST_CASE("decode: batched generation gives each prompt the text it gets alone", "[decode][llama]") {
  auto model = Llama::load(fixture_dir() + "/tiny_llama");
  std::mt19937 rng(11);
  std::vector<std::vector<int32_t>> prompts;
  for (int len : {5, 17, 1, 9, 12}) {
    std::vector<int32_t> p(static_cast<size_t>(len));
    for (int32_t& t : p) t = int32_t(rng() % 300u);
    prompts.push_back(p);
  }
  for (float temperature : {0.0f, 0.9f}) {
    SamplingConfig cfg;
    cfg.max_new_tokens = 11;
    cfg.temperature = temperature;
    cfg.stop_ids = {7};  // some sequences stop early: their slots take the next prompt
    std::vector<std::vector<int32_t>> alone;
    for (size_t i = 0; i < prompts.size(); i++) {
      SamplingConfig c = cfg;
      c.seed = cfg.seed + i;  // generate_batch's seed for prompt i
      alone.push_back(generate(*make_decoder(*model), prompts[i], c));
    }
    std::vector<std::vector<int32_t>> batched(prompts.size());
    std::vector<size_t> order;
    generate_batch(*make_decoder(*model), prompts, 2, cfg, [&](size_t i, const std::vector<int32_t>& ids) {
      batched[i] = ids;
      order.push_back(i);
    });
    INFO("temperature " << temperature);
    CHECK(order.size() == prompts.size());
    // Each row's arithmetic reads only its own inputs and its own cache; the products' kernels give
    // each row the same bits whatever rows share the step (so the same tokens here).
    for (size_t i = 0; i < prompts.size(); i++) CHECK(batched[i] == alone[i]);
  }
}
