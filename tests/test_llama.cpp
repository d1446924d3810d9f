// The Llama model against Hugging Face transformers (tests/reference/ref_llama.py): tiny random
// models saved with save_pretrained (logits, loss, every parameter gradient), and the real
// SmolLM2-135M-Instruct GGUF (logits on three prompts, 32-token greedy continuations).
#include <cstdio>
#include <fstream>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "data/defaults.h"
#include "nn/decoder.h"
#include "nn/generate.h"
#include "nn/llama.h"
#include "tests/helpers.h"

using namespace lolcats;
using lolcats_test::fixture_dir;
using lolcats_test::fx;
using lolcats_test::fx_i32;

namespace {

const char* F = "ref_llama";

const std::string kSmol = kDefaultModel;

const Llama& smollm2() {
  static std::unique_ptr<Llama> m = Llama::load(kSmol);
  return *m;
}

}  // namespace

TEST_CASE("llama: tiny models match transformers (logits, loss, every gradient)", "[llama][ref]") {
  for (const char* name : {"tiny_llama", "tiny_llama_tied"}) {
    INFO(name);
    std::string n = name;
    auto model = Llama::load(fixture_dir() + "/" + n);
    CHECK(model->cfg.tied_embeddings == (n == "tiny_llama_tied"));
    model->set_requires_grad(true);
    Tensor ids = Tensor::from_i32(fx_i32(F, n + ".ids"), {2, 40});
    Tensor targets = Tensor::from_i32(fx_i32(F, n + ".targets"), {80});
    Var logits = model->forward(ids);
    Var loss = cross_entropy(logits, targets);
    // float32 vs a float64 reference through 2 layers: values ~1, sums of <= 96 terms -> 2e-5.
    CHECK_CLOSE(n + " logits", logits->value.f32(), fx<double>(F, n + ".logits"), 2e-5, 2e-5);
    CHECK_CLOSE(n + " loss", loss->value.f32(), fx<double>(F, n + ".loss"), 1e-6, 1e-5);
    backward(loss);
    for (auto& [pname, var] : model->named_parameters()) {
      INFO(pname);
      REQUIRE(var->grad.defined());
      // Gradients are ~1e-3..1e-1 and pass every layer twice: 1e-6 absolute + 1e-4 relative.
      CHECK_CLOSE(n + " grad " + pname, var->grad.f32(), fx<double>(F, n + ".grad." + pname), 1e-6, 1e-4);
    }
  }
}

TEST_CASE("llama: prefill + cached decode equals the full forward at every position", "[llama]") {
  auto model = Llama::load(fixture_dir() + "/tiny_llama");
  const int T = 40, V = model->cfg.vocab;
  std::vector<int32_t> ids = fx_i32(F, "tiny_llama.ids");
  ids.resize(T);  // the first sequence
  Var full = model->forward(Tensor::from_i32(ids, {1, T}));
  // The decoder (nn/decoder.h) one sequence at a time: a 7-token prefill, then a token a step.
  std::unique_ptr<Decoder> dec = make_decoder(*model);
  dec->reserve(1, T);
  std::vector<float> stepwise, logits(static_cast<size_t>(V));
  for (int t = 0, n = 7; t < T; t += n, n = 1) {
    dec->step(ids.data() + t, &n, logits.data());
    if (t == 0) {  // the prefill gives its last position's logits; check it, then carry on
      std::vector<double> w(full->value.f32() + size_t(n - 1) * V, full->value.f32() + size_t(n) * V);
      CHECK_CLOSE("prefill logits", logits.data(), w, 1e-5, 1e-5);
      continue;
    }
    stepwise.insert(stepwise.end(), logits.begin(), logits.end());
  }
  CHECK(dec->length(0) == T);
  std::vector<double> want(full->value.f32() + size_t(7) * V, full->value.f32() + size_t(T) * V);
  // Same float32 math in a different order (one query row vs a tile): a few ulps.
  CHECK_CLOSE("cached decode logits", stepwise, want, 1e-5, 1e-5);
}

TEST_CASE("llama: SmolLM2-135M GGUF matches transformers loading the same file", "[llama][ref][smollm2]") {
  const Llama& m = smollm2();
  CHECK(m.cfg.n_layers == 30);
  CHECK(m.cfg.d_model == 576);
  CHECK(m.cfg.n_heads == 9);
  CHECK(m.cfg.n_kv_heads == 3);
  CHECK(m.cfg.tied_embeddings);
  for (int i = 0; i < 3; i++) {
    INFO("prompt " << i);
    std::vector<int32_t> ids = fx_i32(F, "smol." + std::to_string(i) + ".ids");
    Var logits = m.forward(Tensor::from_i32(ids, {1, int64_t(ids.size())}));
    // Both sides dequantise the same Q4_1/Q8_0 blocks to float32 and run 30 layers in float32 with
    // different summation orders; logits are O(10): 2e-3 absolute + 1e-3 relative.
    CHECK_CLOSE("smollm2 logits " + std::to_string(i), logits->value.f32(),
                fx<double>(F, "smol." + std::to_string(i) + ".logits"), 2e-3, 1e-3);
    std::vector<int32_t> want = fx_i32(F, "smol." + std::to_string(i) + ".greedy");
    SamplingConfig sc;
    sc.max_new_tokens = int(want.size());
    CHECK(generate(*make_decoder(m), ids, sc) == want);
  }
}

TEST_CASE("llama: named configs have the published parameter counts; smollm2-135m is the GGUF's", "[llama]") {
  // Parameter counts as the model cards and checkpoints state them.
  CHECK(parameter_count(named_config("llama3-8b")) == 8030261248);
  CHECK(parameter_count(named_config("llama3.1-8b")) == 8030261248);
  CHECK(parameter_count(named_config("llama3.2-1b")) == 1235814400);
  CHECK(parameter_count(named_config("mistral-7b")) == 7241732096);
  CHECK(parameter_count(named_config("llama3-70b")) == 70553706496);
  CHECK(named_config("llama3.1-8b").rope.llama3_scaling);
  const Llama& m = smollm2();
  CHECK(named_config("smollm2-135m").summary() == m.cfg.summary());
  int64_t weights = 0;
  for (const Var& p : m.parameters()) weights += p->value.numel();
  CHECK(parameter_count(m.cfg) == weights);
  CHECK_THROWS_WITH(named_config("llama9"), Catch::Contains("unknown model config") && Catch::Contains("llama3-8b"));
}

TEST_CASE("llama: bad checkpoints give one clear error", "[llama]") {
  std::string src = fixture_dir() + "/tiny_llama_tied", dir = "build/test_tmp_bad_llama";
  std::system(("rm -rf " + dir + " && mkdir -p " + dir + " && cp " + src + "/* " + dir).c_str());
  auto write = [&](const std::string& file, const std::string& text) { std::ofstream(dir + "/" + file) << text; };
  std::ifstream in(src + "/config.json");
  std::string config((std::istreambuf_iterator<char>(in)), {});
  auto with = [&](const std::string& from, const std::string& to) {
    std::string c = config;
    size_t at = c.find(from);
    REQUIRE(at != std::string::npos);
    return c.replace(at, from.size(), to);
  };
  write("config.json", with("\"hidden_size\": 64", "\"hidden_size\": 32"));
  REQUIRE_THROWS_WITH(Llama::load(dir), Catch::Contains("but the config implies"));
  write("config.json", with("\"model_type\": \"llama\"", "\"model_type\": \"gpt2\""));
  REQUIRE_THROWS_WITH(Llama::load(dir), Catch::Contains("model_type \"gpt2\" is not supported"));
  write("config.json", with("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3"));
  REQUIRE_THROWS_WITH(Llama::load(dir), Catch::Contains("has no tensor model.layers.2."));
  write("config.json", "{\"model_type\": \"llama\", ");
  REQUIRE_THROWS_WITH(Llama::load(dir), Catch::Contains("malformed or incomplete config"));
  REQUIRE_THROWS_WITH(Llama::load("build/no_such_model"), Catch::Contains("model not found"));
  std::system(("rm -rf " + dir).c_str());
}

TEST_CASE("llama: LoRA starts at the base model and merges into the weights", "[llama][lora]") {
  auto model = Llama::load(fixture_dir() + "/tiny_llama");
  Tensor ids = Tensor::from_i32(fx_i32(F, "tiny_llama.ids"), {2, 40});
  Tensor targets = Tensor::from_i32(fx_i32(F, "tiny_llama.targets"), {80});
  std::vector<float> base = model->forward(ids)->value.to_vector();
  auto lora = model->add_lora(8, 16.0f, {"q", "k", "v", "o"}, 0);
  CHECK(lora.size() == 2 * 4 * 2);
  CHECK(lora[0].first == "model.layers.0.self_attn.q_proj.lora_A.weight");
  CHECK(lora[0].second->value.shape() == Shape({8, 64}));
  // B = 0: the model is unchanged (exactly: x A^T B^T adds zeros).
  CHECK(model->forward(ids)->value.to_vector() == base);
  // With B = 0 only B gets a gradient (dA = B^T (...) = 0).
  backward(cross_entropy(model->forward(ids), targets));
  double a_norm = 0, b_norm = 0;
  for (auto& [name, v] : lora)
    for (float g : v->grad.to_vector()) (name.find("lora_A") != std::string::npos ? a_norm : b_norm) += g * g;
  CHECK(a_norm == 0.0);
  CHECK(b_norm > 0.0);
  // Merging W += (alpha/r) B A gives the same logits as running the adapters.
  for (auto& [name, v] : lora)
    if (name.find("lora_B") != std::string::npos) {
      std::vector<double> r = random_normal(v->value.numel(), 9, 0.05);
      for (int64_t i = 0; i < v->value.numel(); i++) v->value.f32()[i] = float(r[i]);
    }
  std::vector<float> with_adapters = model->forward(ids)->value.to_vector();
  for (LlamaLayer& L : model->layers) {
    merge_lora(L.wq, L.lora_q), merge_lora(L.wk, L.lora_k), merge_lora(L.wv, L.lora_v), merge_lora(L.wo, L.lora_o);
    L.lora_q = L.lora_k = L.lora_v = L.lora_o = Lora{};
  }
  // float32, the same products summed in another order: 1e-5.
  CHECK_CLOSE("merged LoRA logits", model->forward(ids)->value.f32(),
              std::vector<double>(with_adapters.begin(), with_adapters.end()), 1e-5, 1e-5);
  REQUIRE_THROWS_WITH(model->add_lora(8, 16.0f, {"gate"}, 0), Catch::Contains("unknown LoRA target \"gate\""));
}

TEST_CASE("llama: every LoRA site draws its own A", "[llama][lora]") {
  // Eight layers with q, k, v and o all taking 64 inputs, so every A has the same shape (r, 64):
  // a seed shared by two sites would give two equal matrices. (A seed of seed + 4 l + 'o' did:
  // layer l's o_proj equalled layer l+1's k_proj.)
  LlamaConfig cfg = Llama::load(fixture_dir() + "/tiny_llama")->cfg;
  cfg.n_layers = 8;
  REQUIRE(cfg.d_model == cfg.n_heads * cfg.head_dim);
  Llama model(cfg);
  auto lora = model.add_lora(4, 8.0f, {"q", "k", "v", "o"}, 0);
  std::vector<std::pair<std::string, std::vector<float>>> As;
  for (auto& [name, v] : lora)
    if (name.find("lora_A") != std::string::npos) As.push_back({name, v->value.to_vector()});
  REQUIRE(As.size() == 8 * 4);
  int equal = 0;
  for (size_t i = 0; i < As.size(); i++)
    for (size_t j = i + 1; j < As.size(); j++)
      if (As[i].second == As[j].second) {
        equal++;
        WARN(As[i].first << " == " << As[j].first);
      }
  CHECK(equal == 0);
  // The same seed draws the same adapters again; another seed draws others.
  Llama again(cfg), other(cfg);
  auto lora_again = again.add_lora(4, 8.0f, {"q", "k", "v", "o"}, 0);
  auto lora_other = other.add_lora(4, 8.0f, {"q", "k", "v", "o"}, 1);
  CHECK(lora_again[0].second->value.to_vector() == As[0].second);
  CHECK(lora_other[0].second->value.to_vector() != As[0].second);
}
