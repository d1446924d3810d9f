// Decoding on the cuda device (emulated in `make test`): the KV-cache attention kernel against its
// CPU twin in double, and whole decode steps against the CPU steps (themselves equal to the
// parallel forward: tests/test_decode.cpp, tests/test_lolcats_model.cpp): the Llama with its KV
// cache, and the linearized model with the fused recurrent kernel, batches of sequences at
// different positions, prefill and decode in the same steps.
#ifdef LOLCATS_CUDA
#include <random>

#include "autograd/gradcheck.h"
#include "data/tokenizer.h"
#include "lolcats/recurrent.h"
#include "nn/decoder.h"
#include "nn/eval/loglik.h"
#include "nn/eval/passkey.h"
#include "tensor/attention.h"
#include "tests/cuda_helpers.h"
#include "tests/decode_helpers.h"
#include "tests/helpers.h"

using namespace lolcats;
using lolcats_test::fixture_dir;
using lolcats_test::join_plan;
using lolcats_test::perturb;
using lolcats_test::random_sequences;
using lolcats_test::run_plan;

namespace {

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, double(std::fabs(x)));
  return m;
}

}  // namespace

TEST_CASE("cuda decode_attention matches the CPU twin: batches of rows at their own positions", "[cuda][sanitize]") {
  SKIP_WITHOUT_CUDA();
  struct Case { int batch, max_len, H, Hkv, D; };
  for (Case c : {Case{3, 70, 4, 2, 16}, Case{2, 150, 9, 3, 64}, Case{2, 40, 8, 8, 128}})
    for (DType dt : {DType::f32, DType::bf16}) {
      INFO("H " << c.H << " Hkv " << c.Hkv << " D " << c.D << " " << dtype_name(dt));
      std::mt19937 rng(uint32_t(c.D + c.H));
      // Rows: decode rows deep in the cache, a chunk at the start of a sequence, a row at 0.
      const std::vector<int32_t> row_seq = {0, 1, 1, 1, 2 % c.batch, 0};
      const std::vector<int32_t> row_pos = {c.max_len - 1, 0, 1, 2, 0, 33};
      const int R = int(row_seq.size()), KD = c.Hkv * c.D;
      auto rnd = [&](size_t n) {
        std::vector<float> v(n);
        std::normal_distribution<float> g(0.0f, 1.0f);
        for (float& x : v) x = g(rng);
        return dt == DType::bf16 ? lolcats_test::rounded(v, lolcats_test::Storage::bf16) : v;
      };
      std::vector<float> q = rnd(size_t(R) * c.H * c.D), k = rnd(size_t(R) * KD), v = rnd(size_t(R) * KD);
      std::vector<float> kc = rnd(size_t(c.batch) * c.max_len * KD), vc = rnd(kc.size());
      // The CPU twin in double, on the same values, after writing the rows' k, v into the caches.
      std::vector<double> kcd(kc.begin(), kc.end()), vcd(vc.begin(), vc.end());
      for (int r = 0; r < R; r++)
        for (int e = 0; e < KD; e++) {
          size_t at = (size_t(row_seq[size_t(r)]) * c.max_len + size_t(row_pos[size_t(r)])) * KD + size_t(e);
          kcd[at] = k[size_t(r) * KD + size_t(e)], vcd[at] = v[size_t(r) * KD + size_t(e)];
        }
      std::vector<double> qd(q.begin(), q.end()), want(q.size());
      decode_attention(want.data(), qd.data(), kcd.data(), vcd.data(), row_seq.data(), row_pos.data(), R, c.H, c.Hkv,
                       c.D, c.max_len);
      lolcats_test::for_each_thread_order([&] {
        auto dev = [&](const std::vector<float>& x, const Shape& s) { return Tensor::from(x, s).to(Device::cuda, dt); };
        Tensor Q = dev(q, {R, c.H, c.D}), K = dev(k, {R, c.Hkv, c.D}), Vv = dev(v, {R, c.Hkv, c.D});
        Tensor KC = dev(kc, {c.batch, c.max_len, c.Hkv, c.D}), VC = dev(vc, {c.batch, c.max_len, c.Hkv, c.D});
        Tensor Y = Tensor::empty({R, c.H, c.D}, dt, Device::cuda);
        decode_attention(Y, KC, VC, Q, K, Vv, Tensor::from_i32(row_seq, {R}).to(Device::cuda),
                         Tensor::from_i32(row_pos, {R}).to(Device::cuda));
        // f32: one query's softmax over <= 150 keys in another order (online, 4 partial sums):
        // 1e-5. bf16: the output rounded once to bf16 (2^-9 relative) on top.
        const bool f32 = dt == DType::f32;
        CHECK_CLOSE("decode attention", Y.to_vector(), want, f32 ? 1e-5 : 1e-2, f32 ? 1e-5 : 4e-3);
        // The caches now hold the rows' keys and values.
        CHECK_CLOSE("k cache", KC.to_vector(), kcd, 0, 0);
        CHECK_CLOSE("v cache", VC.to_vector(), vcd, 0, 0);
      });
    }
}

TEST_CASE("llama decode on the cuda device equals the CPU step (batched, chunked prefill)", "[cuda][decode]") {
  SKIP_WITHOUT_CUDA();
  auto cpu = Llama::load(fixture_dir() + "/tiny_llama");
  const int V = cpu->cfg.vocab;
  const auto seqs = random_sequences({13, 40, 27}, V, 5);
  const std::vector<std::vector<int>> plan = {{5, 7, 0}, {1, 16, 9}, {0, 1, 1}, {7, 10, 17}, {0, 6, 0}};
  std::vector<float> want = run_plan(*make_decoder(*cpu), 40, seqs, V, plan);
  for (DType dt : {DType::f32, DType::bf16}) {
    INFO(dtype_name(dt));
    auto gpu = Llama::load(fixture_dir() + "/tiny_llama", Device::cuda, dt);
    std::unique_ptr<Decoder> gs = make_decoder(*gpu);
    std::vector<float> got = run_plan(*gs, 40, seqs, V, plan);
    // f32: two layers summed in other orders: 2e-5 (as the parallel forward on the device).
    // bf16: weights, activations and the KV cache rounded to bf16 at every step: ~2% of the
    // logits' scale (the bound of tests/test_llama_cuda.cpp).
    const bool f32 = dt == DType::f32;
    CHECK_CLOSE("device decode logits", got, std::vector<double>(want.begin(), want.end()),
                f32 ? 2e-5 : 2e-2 * max_abs(want), f32 ? 2e-5 : 2e-2);
    CHECK(std::vector<int>{gs->length(0), gs->length(1), gs->length(2)} == std::vector<int>{13, 40, 27});
  }
}

TEST_CASE("lolcats decode on the cuda device equals the CPU recurrent step", "[cuda][sanitize][decode][lolcats]") {
  SKIP_WITHOUT_CUDA();
  auto cpu_base = Llama::load(fixture_dir() + "/tiny_llama");
  const int V = cpu_base->cfg.vocab;
  // Long enough to cross several 64-token blocks: folds, the ring wrapping, a window split
  // between the ring and the step's own rows.
  const auto seqs = random_sequences({200, 150, 180}, V, 7);
  const std::vector<std::vector<int>> plan = join_plan(1, 100, 30);
  for (auto [var, fm] : {std::pair{HybridVariant::terrace, FeatureMapKind::hedgehog},
                         {HybridVariant::sw, FeatureMapKind::t2r}, {HybridVariant::linear, FeatureMapKind::hedgehog}}) {
    LolcatsConfig cfg;
    cfg.variant = var;
    cfg.feature_map = fm;
    cfg.softmax_layers = {1};  // a kept softmax layer: its KV cache beside the recurrent states
    LolcatsModel cpu(*cpu_base, cfg);
    perturb(cpu, 11);
    std::vector<float> want = run_plan(*make_decoder(cpu, DecodeMode::exact), 200, seqs, V, plan);
    for (DType dt : {DType::f32, DType::bf16}) {
      INFO(variant_name(var) << " " << feature_map_name(fm) << " " << dtype_name(dt));
      auto gpu_base = Llama::load(fixture_dir() + "/tiny_llama", Device::cuda, dt);
      LolcatsModel gpu(*gpu_base, cfg);
      for (size_t i = 0; i < gpu.parameters().size(); i++) gpu.parameters()[i]->value.copy_from(cpu.parameters()[i]->value, "p");
      std::unique_ptr<Decoder> gs = make_decoder(gpu, DecodeMode::exact);
      std::vector<float> got = run_plan(*gs, 200, seqs, V, plan);
      // f32: the CPU accumulates the attention in double, the kernel in f32, the state folded in
      // the same order: 1e-4 (as the CPU decode against the parallel forward). bf16: as above.
      const bool f32 = dt == DType::f32;
      CHECK_CLOSE("device recurrent logits", got, std::vector<double>(want.begin(), want.end()),
                  f32 ? 1e-4 : 2e-2 * max_abs(want), f32 ? 1e-4 : 2e-2);
      CHECK(gs->state_bytes() > 0);
    }
  }
}

TEST_CASE("lolcats decode on the cuda device: the reference mode is refused with a reason", "[cuda][decode][lolcats]") {
  SKIP_WITHOUT_CUDA();
  auto base = Llama::load(fixture_dir() + "/tiny_llama", Device::cuda, DType::f32);
  LolcatsModel m(*base, LolcatsConfig{});
  CHECK_THROWS_WITH(make_decoder(m, DecodeMode::reference),
                    Catch::Contains("exact mode only"));
}

namespace {

// Scoring requests that cross the 64-token blocks (so the linear state takes part): items sharing
// a context, contexts sharing a prefix (copied sequences), and a run of items sharing an anchor.
std::vector<std::vector<LoglikRequest>> long_items(int V) {
  std::mt19937 rng(17);
  auto ids = [&](int n) {
    std::vector<int32_t> x(static_cast<size_t>(n));
    for (int32_t& t : x) t = int32_t(rng() % uint32_t(V));
    return x;
  };
  std::vector<std::vector<LoglikRequest>> items;
  const std::vector<int32_t> shots = ids(100);
  for (int i = 0; i < 6; i++) {
    std::vector<int32_t> ctx = ids(30 + 23 * i);
    if (i >= 3) ctx.insert(ctx.begin(), shots.begin(), shots.end());
    std::vector<LoglikRequest> item;
    for (int k = 0; k < 3; k++) item.push_back({ctx, ids(1 + (k * 5 + i) % 7)});
    items.push_back(item);
  }
  return items;
}

std::vector<double> logprobs(const std::vector<std::vector<Loglik>>& scored) {
  std::vector<double> out;
  for (const auto& item : scored)
    for (const Loglik& l : item) out.push_back(l.logprob);
  return out;
}

}  // namespace

TEST_CASE("scoring on the cuda device equals the CPU's: per-choice log-likelihoods", "[cuda][decode][eval]") {
  SKIP_WITHOUT_CUDA();
  // The trained tiny model: its distributions are far from uniform, so the scores tell models apart.
  const std::string path = fixture_dir() + "/tiny_app_llama";
  auto cpu_base = Llama::load(path);
  const int V = cpu_base->cfg.vocab;
  const std::vector<std::vector<LoglikRequest>> items = long_items(V);
  LolcatsConfig cfg;
  cfg.softmax_layers = {1};  // a kept KV cache, copied beside the recurrent state
  LolcatsModel cpu(*cpu_base, cfg);
  perturb(cpu, 13);
  LoglikOptions small;  // several batches, the anchor copied into each
  small.max_slots = 4;
  small.max_rows = 40;
  const std::vector<double> want_soft = logprobs(score_loglik(*make_decoder(*cpu_base), items, small));
  const std::vector<double> want_lin = logprobs(score_loglik(*make_decoder(cpu, DecodeMode::exact), items, small));
  for (DType dt : {DType::f32, DType::bf16}) {
    INFO(dtype_name(dt));
    auto gpu_base = Llama::load(path, Device::cuda, dt);
    LolcatsModel gpu(*gpu_base, cfg);
    for (size_t i = 0; i < gpu.parameters().size(); i++) gpu.parameters()[i]->value.copy_from(cpu.parameters()[i]->value, "p");
    const std::vector<double> soft = logprobs(score_loglik(*make_decoder(*gpu_base), items, small));
    const std::vector<double> lin = logprobs(score_loglik(*make_decoder(gpu, DecodeMode::exact), items, small));
    // Sums of <= 7 log-probabilities, 5 to 40 in all. f32: the same arithmetic in other orders,
    // measured 4.4e-6 at most: 1e-5 + 1e-5 relative. bf16: weights, activations and caches rounded
    // to bf16 (2^-9 relative) at every layer, measured 0.066 (0.7%): 0.1 + 1e-2 relative. The two
    // models' scores differ by up to 2.3, far outside either bound.
    const bool f32 = dt == DType::f32;
    CHECK_CLOSE("softmax model", soft, want_soft, f32 ? 1e-5 : 0.1, f32 ? 1e-5 : 1e-2);
    CHECK_CLOSE("linearized model", lin, want_lin, f32 ? 1e-5 : 0.1, f32 ? 1e-5 : 1e-2);
  }
}

TEST_CASE("passkey on the cuda device: the replies equal the CPU's", "[cuda][decode][passkey]") {
  SKIP_WITHOUT_CUDA();
  const std::string path = fixture_dir() + "/tiny_app_llama";  // a trained model: confident argmaxes
  auto cpu_base = Llama::load(path);
  Tokenizer tok = Tokenizer::from_model(path);
  std::vector<std::vector<int32_t>> prompts;
  for (int d : {0, 50, 100}) prompts.push_back(build_passkey_prompt(tok, 300, d, passkey_key(5, 300, d, 0), false).ids);
  PasskeyGenOptions o;
  o.new_tokens = 6;
  o.max_rows = 50;  // prompts in pieces, the shared filler fed once into the anchor and copied
  o.max_slots = 3;
  LolcatsModel cpu(*cpu_base, LolcatsConfig{});
  const auto want_soft = passkey_generate(*make_decoder(*cpu_base), prompts, o);
  const auto want_lin = passkey_generate(*make_decoder(cpu, DecodeMode::exact), prompts, o);
  for (const auto* replies : {&want_soft, &want_lin})  // replies to compare, not empty ones
    for (const std::vector<int32_t>& r : *replies) REQUIRE(r.size() == size_t(o.new_tokens));
  // f32 storage: the same arithmetic in other orders (logits within 1e-4), so the greedy choices
  // of a trained model agree.
  auto gpu_base = Llama::load(path, Device::cuda, DType::f32);
  LolcatsModel gpu(*gpu_base, LolcatsConfig{});
  CHECK(passkey_generate(*make_decoder(*gpu_base), prompts, o) == want_soft);
  CHECK(passkey_generate(*make_decoder(gpu, DecodeMode::exact), prompts, o) == want_lin);
}

#endif  // LOLCATS_CUDA
