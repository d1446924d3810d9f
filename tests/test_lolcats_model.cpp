// A Llama converted to LoLCATs: recurrent decoding against the parallel forward (exact mode equal
// at every position, reference mode equal only before position 64), constant state size,
// attention transfer (teacher forcing, per-layer backward = whole-graph backward), checkpoints.
#include <cmath>
#include <cstring>
#include <filesystem>

#include "autograd/gradcheck.h"

#include "autograd/ops.h"
#include "data/safetensors.h"
#include "lolcats/export.h"
#include "lolcats/recurrent.h"
#include "lolcats/stages.h"
#include "nn/generate.h"
#include "tests/decode_helpers.h"
#include "tests/helpers.h"

using namespace lolcats;
using lolcats_test::perturb;

namespace {

std::string tiny_path() {
  const char* d = std::getenv("LOLCATS_FIXTURES");
  return std::string(d ? d : "build/fixtures") + "/tiny_llama";
}

std::vector<int32_t> token_ids(int n, int vocab) {
  std::vector<int32_t> ids(n);
  for (int i = 0; i < n; i++) ids[i] = int32_t((i * 7919 + 13) % vocab);
  return ids;
}

// Logits of positions prefill-1 .. T-1: the prompt's first `prefill` tokens in one step, then one
// token per step.
std::vector<float> recurrent_logits(const LolcatsModel& m, const std::vector<int32_t>& ids, int prefill,
                                    DecodeMode mode) {
  const size_t V = size_t(m.base.cfg.vocab);
  std::unique_ptr<Decoder> dec = make_decoder(m, mode);
  dec->reserve(1, int(ids.size()));
  std::vector<float> out((ids.size() - size_t(prefill) + 1) * V);
  dec->step(ids.data(), &prefill, out.data());
  for (size_t t = size_t(prefill), i = 1; t < ids.size(); t++, i++) {
    const int one = 1;
    dec->step(ids.data() + t, &one, out.data() + i * V);
  }
  return out;
}

// Rows first .. of a (T, V) logits tensor.
std::vector<double> rows_from(const Var& logits, int first) {
  const Tensor& t = logits->value;
  return std::vector<double>(t.f32() + size_t(first) * size_t(t.size(1)), t.f32() + t.numel());
}

}  // namespace

TEST_CASE("lolcats decode: exact mode equals the parallel forward at every position", "[lolcats][decode]") {
  auto base = Llama::load(tiny_path());
  const int T = 300, V = base->cfg.vocab;
  std::vector<int32_t> ids = token_ids(T, V);
  // Hedgehog with every variant; T2R (whose state holds relu features) with the two windowed ones.
  for (auto [var, fm] : {std::pair{HybridVariant::terrace, FeatureMapKind::hedgehog},
                         {HybridVariant::sw, FeatureMapKind::hedgehog}, {HybridVariant::linear, FeatureMapKind::hedgehog},
                         {HybridVariant::terrace, FeatureMapKind::t2r}, {HybridVariant::sw, FeatureMapKind::t2r}}) {
    LolcatsConfig cfg;
    cfg.variant = var;
    cfg.feature_map = fm;
    LolcatsModel m(*base, cfg);
    perturb(m, 1);
    Var full = m.forward(Tensor::from_i32(ids, {1, T}));
    for (int prefill : {1, 70, 130}) {
      INFO(variant_name(var) << " " << feature_map_name(fm) << " prefill " << prefill);
      // float32, different summation order (one query vs a tile; state built key by key vs per
      // block): logits are O(1), 1e-4 absolute.
      CHECK_CLOSE("recurrent logits", recurrent_logits(m, ids, prefill, DecodeMode::exact),
                  rows_from(full, prefill - 1), 1e-4, 1e-4);
    }
  }
}

TEST_CASE("lolcats decode: reference mode differs from terrace only from position 64", "[lolcats][decode]") {
  auto base = Llama::load(tiny_path());
  const int T = 200, V = base->cfg.vocab;
  std::vector<int32_t> ids = token_ids(T, V);
  LolcatsModel m(*base, LolcatsConfig{});
  perturb(m, 2);
  Var full = m.forward(Tensor::from_i32(ids, {1, T}));
  std::vector<float> ref = recurrent_logits(m, ids, 1, DecodeMode::reference);  // positions 0 .. T-1
  double before = 0, after = 0;
  for (int t = 0; t < T; t++)
    for (int v = 0; v < V; v++) {
      double d = std::fabs(ref[size_t(t) * V + v] - full->value.f32()[size_t(t) * V + v]);
      (t < 64 ? before : after) = std::max(t < 64 ? before : after, d);
    }
  CHECK(before < 1e-4);
  CHECK(after > 1e-3);
  // The reference FIFO is exactly the sw variant's parallel form.
  LolcatsConfig sw;
  sw.variant = HybridVariant::sw;
  LolcatsModel msw(*base, sw);
  for (size_t i = 0; i < m.parameters().size(); i++)
    std::memcpy(msw.parameters()[i]->value.data(), m.parameters()[i]->value.data(), m.parameters()[i]->value.nbytes());
  Var sw_full = msw.forward(Tensor::from_i32(ids, {1, T}));
  CHECK_CLOSE("reference decode = sw parallel", ref, rows_from(sw_full, 0), 1e-4, 1e-4);
}

TEST_CASE("lolcats decode: a batch of sequences at different positions equals each one's parallel forward",
          "[lolcats][decode]") {
  auto base = Llama::load(tiny_path());
  const int V = base->cfg.vocab;
  // Layer 1 kept as softmax: its KV cache and the converted layers' states advance in one step.
  for (auto [var, fm] : {std::pair{HybridVariant::terrace, FeatureMapKind::hedgehog},
                         {HybridVariant::sw, FeatureMapKind::t2r}}) {
    LolcatsConfig cfg;
    cfg.variant = var;
    cfg.feature_map = fm;
    cfg.softmax_layers = {1};
    LolcatsModel m(*base, cfg);
    perturb(m, 3);
    // Three sequences of different lengths and prompts; the third joins at step 5.
    const std::vector<int> len = {200, 150, 180}, prefill = {1, 70, 130}, joins = {0, 0, 5};
    std::vector<std::vector<int32_t>> ids;
    for (int b = 0; b < 3; b++) {
      std::vector<int32_t> x = token_ids(len[b] + 11 * b, V);
      ids.emplace_back(x.begin() + 11 * b, x.end());
    }
    std::unique_ptr<Decoder> dec = make_decoder(m, DecodeMode::exact);
    dec->reserve(3, 200);
    Decoder& state = *dec;
    std::vector<std::vector<float>> got(3);
    std::vector<float> logits(size_t(3) * V);
    for (int step = 0; state.length(0) < len[0] || state.length(1) < len[1] || state.length(2) < len[2]; step++) {
      std::vector<int32_t> tokens;
      std::vector<int> n(3, 0);
      for (int b = 0; b < 3; b++) {
        const int at = state.length(b);
        if (step < joins[b] || at == len[b]) continue;
        n[b] = at == 0 ? prefill[b] : 1;
        tokens.insert(tokens.end(), ids[b].begin() + at, ids[b].begin() + at + n[b]);
      }
      state.step(tokens.data(), n.data(), logits.data());
      for (int b = 0; b < 3; b++)
        if (n[b] > 0) got[b].insert(got[b].end(), logits.begin() + b * V, logits.begin() + (b + 1) * V);
    }
    for (int b = 0; b < 3; b++) {
      INFO(variant_name(var) << " sequence " << b);
      Var full = m.forward(Tensor::from_i32(ids[b], {1, len[b]}));
      CHECK_CLOSE("batched recurrent logits", got[b], rows_from(full, prefill[b] - 1), 1e-4, 1e-4);
    }
  }
}

TEST_CASE("lolcats decode: batched generation gives each prompt the text it gets alone", "[lolcats][decode]") {
  auto base = Llama::load(tiny_path());
  LolcatsModel m(*base, LolcatsConfig{});
  perturb(m, 4);
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 5; i++) {
    std::vector<int32_t> p = token_ids(3 + 40 * i, base->cfg.vocab);
    prompts.emplace_back(p.begin() + i, p.end());
  }
  SamplingConfig sc;
  sc.max_new_tokens = 90;  // past the first 64-block boundary of every prompt
  std::vector<std::vector<int32_t>> batched(prompts.size());
  generate_batch(*make_decoder(m, DecodeMode::exact), prompts, 2, sc,
                 [&](size_t i, const std::vector<int32_t>& out) { batched[i] = out; });
  for (size_t i = 0; i < prompts.size(); i++) {
    INFO("prompt " << i);
    CHECK(batched[i] == generate(*make_decoder(m, DecodeMode::exact), prompts[i], sc));
  }
}

TEST_CASE("lolcats decode: state size is independent of length", "[lolcats][decode]") {
  auto base = Llama::load(tiny_path());
  LolcatsModel m(*base, LolcatsConfig{});
  std::unique_ptr<Decoder> dec = make_decoder(m, DecodeMode::exact);
  dec->reserve(1, 1);  // no layer keeps a KV cache: no bound
  Decoder& state = *dec;
  const size_t initial = state.state_bytes();
  CHECK(initial > 0);
  CHECK(dynamic_cast<LolcatsMemory&>(state.memory()).kept().bytes() == 0);
  std::vector<float> logits(size_t(base->cfg.vocab));
  for (int t = 0; t < 10000; t++) {
    const int32_t id = int32_t(t % base->cfg.vocab);
    const int one = 1;
    state.step(&id, &one, logits.data());
    if (t + 1 == 100) CHECK(state.state_bytes() == initial);
  }
  CHECK(std::isfinite(logits[0]));
  CHECK(state.state_bytes() == initial);
  CHECK(state.length(0) == 10000);
}

TEST_CASE("lolcats transfer: teacher forcing, and per-layer backward equals one backward", "[lolcats]") {
  auto base = Llama::load(tiny_path());
  const int T = 150;
  Tensor ids = Tensor::from_i32(token_ids(2 * T, base->cfg.vocab), {2, T});
  LolcatsModel a(*base, LolcatsConfig{}), b(*base, LolcatsConfig{});
  perturb(a, 3);
  perturb(b, 3);
  TransferResult ra = attention_transfer(a, ids, 1.0f);
  // The teacher's logits come out unchanged: every layer passed on softmax attention's output.
  Var teacher = base->forward(ids);
  CHECK_CLOSE("teacher-forced logits", base->logits(ra.hidden)->value.f32(),
              std::vector<double>(teacher->value.f32(), teacher->value.f32() + teacher->value.numel()), 0.0, 0.0);
  // Same loss as a single graph over all layers, differentiated once.
  std::vector<Var> mses;
  Var x = base->embed(ids);
  const RopeTables rope = base->rope_tables(T);
  for (int l = 0; l < base->cfg.n_layers; l++) {
    AttentionInputs in = base->attention_inputs(l, x, rope);
    Var y_true;
    {
      NoGrad ng;
      y_true = attention(in.q, in.k, in.v);
    }
    mses.push_back(mse(b.student_attention(l, in.q, in.k, in.v), y_true));
    x = base->mlp_residual(l, base->attention_residual(l, x, y_true));
  }
  Var total = mses[0];
  for (size_t i = 1; i < mses.size(); i++) total = add(total, mses[i]);
  Var loss = scale(total, 1000.0f / float(mses.size()));
  CHECK(ra.loss == Approx(item(loss)).epsilon(1e-5));
  backward(loss);
  for (size_t i = 0; i < a.parameters().size(); i++) {
    Var pa = a.parameters()[i], pb = b.parameters()[i];
    CHECK_CLOSE("transfer grad " + std::to_string(i), pa->grad.f32(),
                std::vector<double>(pb->grad.f32(), pb->grad.f32() + pb->grad.numel()), 1e-6, 1e-4);
  }
}

TEST_CASE("lolcats export: the base model is found from any working folder, or the error names where it looked",
          "[lolcats][export]") {
  namespace fs = std::filesystem;
  const fs::path here = fs::current_path(), root = fs::absolute("build/test_tmp_base_paths");
  fs::remove_all(root);
  fs::create_directories(root / "a/run");
  fs::create_directories(root / "elsewhere");
  fs::copy(tiny_path(), root / "a/model", fs::copy_options::recursive);
  auto base = Llama::load((root / "a/model").string());
  LolcatsModel m(*base, LolcatsConfig{});
  // Recorded as the user typed it: relative to this working folder.
  const std::string base_arg = fs::path(root / "a/model").lexically_relative(here).string();
  export_linearized((root / "a/run/lolcats_params.safetensors").string(), m, LoraExport::separate, base_arg);
  std::string error;
  {
    struct Back {  // the working folder comes back whatever happens in this scope
      fs::path to;
      ~Back() { fs::current_path(to); }
    } back{here};
    // From another working folder: the recorded absolute path.
    fs::current_path(root / "elsewhere");
    CHECK(load_linearized("../a/run/lolcats_params.safetensors").base_model == (root / "a/model").string());
    // The run folder and the model moved together: the path from the export's folder.
    fs::rename(root / "a", root / "b");
    CHECK(load_linearized("../b/run/lolcats_params.safetensors").base_model == (root / "b/model").string());
    // Neither: one error naming every place it looked, and what to do.
    fs::remove_all(root / "b/model");
    try {
      load_linearized("../b/run/lolcats_params.safetensors");
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  INFO(error);
  CHECK(error.find("base model was not found") != std::string::npos);
  CHECK(error.find((root / "a/model").string()) != std::string::npos);
  CHECK(error.find((root / "b/model").string()) != std::string::npos);
  CHECK(error.find("--model") != std::string::npos);
  fs::remove_all(root);
}

TEST_CASE("lolcats model: kept softmax layers, checkpoints with reference names", "[lolcats]") {
  auto base = Llama::load(tiny_path());
  LolcatsConfig all_softmax;
  all_softmax.softmax_layers = {0, 1};
  LolcatsModel none(*base, all_softmax);
  Tensor ids = Tensor::from_i32(token_ids(80, base->cfg.vocab), {1, 80});
  Var a = none.forward(ids), b = base->forward(ids);
  CHECK_CLOSE("all layers kept = base model", a->value.f32(),
              std::vector<double>(b->value.f32(), b->value.f32() + b->value.numel()), 0.0, 0.0);
  REQUIRE_THROWS_WITH(attention_transfer(none, ids, 0.0f), Catch::Contains("no layer is converted"));
  LolcatsConfig bad;
  bad.softmax_layers = {5};
  REQUIRE_THROWS_WITH(LolcatsModel(*base, bad), Catch::Contains("softmax layer 5 does not exist"));

  LolcatsConfig one;
  one.softmax_layers = {1};
  LolcatsModel m(*base, one);
  perturb(m, 4);
  std::string path = "build/test_tmp_lolcats.safetensors";
  m.save(path);
  SafeTensorsFile f(path);
  const int64_t H = base->cfg.n_heads, D = base->cfg.head_dim;
  CHECK(f.info("model.layers.0.self_attn.feature_map_q.mlp.layer").shape == std::vector<int64_t>{H, D, D});
  CHECK(f.info("model.layers.0.self_attn.feature_map_k.mlp.layer").shape == std::vector<int64_t>{H, D, D});
  CHECK(f.info("model.layers.0.self_attn.window_factors").shape == std::vector<int64_t>{1, H, 1, 1});
  CHECK_FALSE(f.has("model.layers.1.self_attn.window_factors"));
  LolcatsModel fresh(*base, one);
  fresh.load(path);
  for (size_t i = 0; i < m.parameters().size(); i++)
    CHECK(fresh.parameters()[i]->value.to_vector() == m.parameters()[i]->value.to_vector());
  LolcatsModel other(*base, LolcatsConfig{});
  REQUIRE_THROWS_WITH(other.load(path), Catch::Contains("missing model.layers.1"));
  std::remove(path.c_str());
}

namespace {

// Logits (T, V) of a model as doubles, for CHECK_CLOSE.
std::vector<double> logits_of(const LolcatsModel& m, const Tensor& ids) {
  NoGrad no_grad;
  Var l = m.forward(ids);
  return std::vector<double>(l->value.f32(), l->value.f32() + l->value.numel());
}

}  // namespace

TEST_CASE("lolcats export: separate and merged LoRA load back as the trained model", "[lolcats][export]") {
  auto base = Llama::load(tiny_path());
  LolcatsConfig cfg;
  cfg.softmax_layers = {1};
  cfg.variant = HybridVariant::sw;
  LolcatsModel m(*base, cfg);
  perturb(m, 11);
  Tensor ids = Tensor::from_i32(token_ids(150, base->cfg.vocab), {1, 150});
  const std::string path = "build/test_tmp_export.safetensors";

  // Stage 1 only: no LoRA in the file.
  export_linearized(path, m, LoraExport::merged, tiny_path());
  CHECK(is_linearized_export(path));
  {
    LinearizedModel lin = load_linearized(path);
    CHECK(SafeTensorsFile(path).metadata().at("lora") == "none");
    CHECK(lin.model->cfg.variant == HybridVariant::sw);
    CHECK_FALSE(lin.model->layers[1].converted);
    CHECK_CLOSE("stage-1 export", logits_of(*lin.model, ids), logits_of(m, ids), 0.0, 0.0);
  }

  // Stage 2: LoRA (B non-zero, as after training) on q, v, o only.
  auto lora = base->add_lora(4, 8.0f, {"q", "v", "o"}, 3);
  uint64_t seed = 100;
  for (auto& [name, v] : lora) {
    std::vector<double> r = random_normal(v->value.numel(), seed++, 0.05);
    for (int64_t i = 0; i < v->value.numel(); i++) v->value.f32()[i] = float(r[i]);
  }
  const std::vector<double> want = logits_of(m, ids);

  export_linearized(path, m, LoraExport::separate, tiny_path());
  {
    SafeTensorsFile f(path);
    CHECK(f.metadata().at("lora") == "separate");
    CHECK(f.metadata().at("lora_targets") == "q,v,o");
    CHECK(f.has("model.layers.0.self_attn.q_proj.lora_A.weight"));
    CHECK_FALSE(f.has("model.layers.0.self_attn.k_proj.lora_A.weight"));
    CHECK_FALSE(f.has("model.layers.0.self_attn.q_proj.weight"));  // the base stays in its checkpoint
    LinearizedModel lin = load_linearized(path);
    CHECK(lin.base->layers[0].lora_q.active());
    CHECK_CLOSE("separate LoRA: the same computation", logits_of(*lin.model, ids), want, 0.0, 0.0);
  }

  export_linearized(path, m, LoraExport::merged, tiny_path());
  {
    SafeTensorsFile f(path);
    CHECK(f.metadata().at("lora") == "merged");
    CHECK_FALSE(f.has("model.layers.0.self_attn.q_proj.lora_A.weight"));
    CHECK(f.has("model.embed_tokens.weight"));
    CHECK(f.has("model.layers.1.mlp.down_proj.weight"));
    LinearizedModel lin = load_linearized(path);
    CHECK_FALSE(lin.base->layers[0].lora_q.active());
    // W + s B A is rounded to f32 once, where the unmerged model rounds x A^T and its product:
    // the same function up to float32 rounding.
    CHECK_CLOSE("merged LoRA: the same function", logits_of(*lin.model, ids), want, 1e-5, 1e-4);
    // And the merge did not touch the trained model itself.
    CHECK_CLOSE("trained model unchanged", logits_of(m, ids), want, 0.0, 0.0);
  }

  // A different base model is refused by name, not silently mixed.
  const std::string other = std::string(std::getenv("LOLCATS_FIXTURES") ? std::getenv("LOLCATS_FIXTURES")
                                                                          : "build/fixtures") + "/tiny_llama_tied";
  REQUIRE_THROWS_WITH(load_linearized(path, other), Catch::Contains("different base model"));
  CHECK_FALSE(is_linearized_export(other + "/model.safetensors"));
  std::remove(path.c_str());
}

TEST_CASE("lolcats export: a T2R model round-trips, and its parameters are not taken for Hedgehog's",
          "[lolcats][export][t2r]") {
  auto base = Llama::load(tiny_path());
  LolcatsConfig cfg;
  cfg.feature_map = FeatureMapKind::t2r;
  LolcatsModel m(*base, cfg);
  const int64_t H = base->cfg.n_heads, D = base->cfg.head_dim;
  CHECK(m.F == D);
  CHECK(m.named_parameters().size() == 2 * 5);  // per layer: W and b of q and k, window factors
  perturb(m, 21);
  auto lora = base->add_lora(4, 8.0f, {"q", "k", "v", "o"}, 7);
  uint64_t seed = 200;
  for (auto& [name, v] : lora) {
    std::vector<double> r = random_normal(v->value.numel(), seed++, 0.05);
    for (int64_t i = 0; i < v->value.numel(); i++) v->value.f32()[i] = float(r[i]);
  }
  Tensor ids = Tensor::from_i32(token_ids(150, base->cfg.vocab), {1, 150});
  const std::vector<double> want = logits_of(m, ids);

  const std::string path = "build/test_tmp_t2r.safetensors";
  export_linearized(path, m, LoraExport::separate, tiny_path());
  {
    SafeTensorsFile f(path);
    CHECK(f.metadata().at("feature_map") == "t2r");
    CHECK(f.info("model.layers.0.self_attn.feature_map_q.mlp.layer").shape == std::vector<int64_t>{H, D, D});
    CHECK(f.info("model.layers.1.self_attn.feature_map_k.mlp.bias").shape == std::vector<int64_t>{H, D});
  }
  LinearizedModel lin = load_linearized(path);
  CHECK(lin.model->cfg.feature_map == FeatureMapKind::t2r);
  CHECK_CLOSE("T2R export: the same computation", logits_of(*lin.model, ids), want, 0.0, 0.0);

  // Stage-1 parameters saved from T2R do not load into a Hedgehog model (nor the reverse).
  m.save(path);
  LolcatsModel hedgehog(*base, LolcatsConfig{});
  REQUIRE_THROWS_WITH(hedgehog.load(path), Catch::Contains("holds t2r feature maps, but this model uses hedgehog"));
  std::remove(path.c_str());
}
