// The sparse global cache (lolcats/sparse_cache.h, LOLCATS.md 9) against oracles we did not write:
//   - an independent float64 transcription of LoLA's rule (tests/reference/ref_lola.py), token by
//     token, on random heads: outputs and which positions each head keeps, under every way of
//     feeding the rows (one prompt, token by token, chunks), ties and caches smaller than a block;
//   - G at least the sequence length is softmax attention: the linearized model decodes exactly as
//     its teacher (the Llama with a KV cache), whatever its feature maps and window factors;
//   - G = 0 is the paper's layer: the decoder without the option, bit for bit;
//   - the CUDA twin (emulated) against the CPU memory.
#include <cstring>

#include "lolcats/recurrent.h"
#include "lolcats/recurrent_device.h"
#include "lolcats/sparse_cache.h"
#include "nn/eval/loglik.h"
#include "tensor/loss.h"
#include "tests/cuda_helpers.h"
#include "tests/decode_helpers.h"
#include "tests/helpers.h"

using namespace lolcats;
using lolcats_test::fixture;
using lolcats_test::fixture_dir;
using lolcats_test::fx;
using lolcats_test::join_plan;
using lolcats_test::perturb;
using lolcats_test::random_sequences;
using lolcats_test::run_plan;

namespace {

const char* kRef = "ref_lola";
constexpr int H = 4, Hkv = 2, D = 16, Fh = 8;  // as ref_lola.py's case(); tiny_llama's heads

struct RefCase {
  std::string name;
  HybridVariant variant;
  int T, G, sinks;
};

std::vector<RefCase> ref_cases() {  // as ref_lola.py's loop
  std::vector<RefCase> out;
  for (const char* v : {"terrace", "sw"}) {
    auto add = [&](int T, int G, const std::string& suffix = "", int sinks = 0) {
      const std::string s = sinks ? "_S" + std::to_string(sinks) : "";
      out.push_back({std::string(v) + "_T" + std::to_string(T) + "_G" + std::to_string(G) + s + suffix, parse_variant(v), T,
                     G, sinks});
    };
    for (int T : {1, 17, 65, 130, 200}) add(T, 32);
    add(300, 5), add(300, 100), add(260, 0), add(200, 200), add(300, 24, "_ties");
    add(300, 24, "", 4), add(200, 24, "", 40);
  }
  return out;
}

// A linearized tiny_llama (weights unused here: only layer 0's attention is driven) whose layer 0
// has the case's feature maps and window logits.
std::unique_ptr<LolcatsModel> model_for(const Llama& base, const RefCase& c) {
  LolcatsConfig cfg;
  cfg.variant = c.variant;
  cfg.feature_half = Fh;
  auto m = std::make_unique<LolcatsModel>(base, cfg);
  LolcatsLayer& L = m->layers[0];
  auto set = [&](const Var& p, const std::string& key) {
    const std::vector<float> v = fx<float>(kRef, c.name + "." + key);
    REQUIRE(v.size() == size_t(p->value.numel()));
    p->value.copy_from(Tensor::from(v, p->value.shape()), key.c_str());
  };
  set(L.wq_fm, "Wq"), set(L.wk_fm, "Wk"), set(L.wlogit, "w");
  return m;
}

// Layer 0 of `memory` fed rows q (T, H, D), k, v (T, Hkv, D) of one sequence in steps of `chunks`
// rows (the last repeated until T), on `dev` in `dt`; returns y (T, H, D) as f32 on the host.
std::vector<float> attend_layer0(DecodeMemory& memory, const std::vector<float>& q, const std::vector<float>& k,
                                 const std::vector<float>& v, int T, const std::vector<int>& chunks, Device dev,
                                 DType dt) {
  memory.reserve(1, T);
  std::vector<float> y(size_t(T) * H * D);
  for (int P0 = 0, i = 0; P0 < T; i++) {
    const int n = std::min(chunks[std::min(size_t(i), chunks.size() - 1)], T - P0);
    StepRows rows;
    rows.R = n, rows.n = {n}, rows.first = {0}, rows.length = {P0};
    for (int t = 0; t < n; t++) rows.seq.push_back(0), rows.pos.push_back(P0 + t);
    rows.seq_t = Tensor::from_i32(rows.seq, {n}).to(dev);
    rows.pos_t = Tensor::from_i32(rows.pos, {n}).to(dev);
    auto part = [&](const std::vector<float>& x, int heads) {
      return Tensor::from(std::vector<float>(x.begin() + size_t(P0) * heads * D, x.begin() + size_t(P0 + n) * heads * D),
                          {n, heads, D})
          .to(dev, dt);
    };
    Tensor qt = part(q, H), kt = part(k, Hkv), vt = part(v, Hkv), yt = Tensor::zeros({n, H, D}, dt, dev);
    memory.begin_step(rows);
    memory.attend(0, yt, qt, kt, vt, rows);
    memory.end_step(rows);
    const Tensor host = yt.to(Device::cpu, DType::f32);
    std::memcpy(y.data() + size_t(P0) * H * D, host.f32(), host.nbytes());
    P0 += n;
  }
  return y;
}

// Values rounded to bf16, as f32.
std::vector<float> bf16_rounded(const std::vector<float>& x) {
  const Tensor t = Tensor::from(x, {int64_t(x.size())}).to(Device::cpu, DType::bf16).to(Device::cpu, DType::f32);
  return std::vector<float>(t.f32(), t.f32() + x.size());
}

}  // namespace

TEST_CASE("sparse cache: LoLA's rule as transcribed in float64 (ref_lola.py), every way of feeding the rows",
          "[sparse_cache][decode][lolcats]") {
  auto base = Llama::load(fixture_dir() + "/tiny_llama");
  REQUIRE(base->cfg.n_heads == H);
  REQUIRE(base->cfg.head_dim == D);
  for (const RefCase& c : ref_cases()) {
    auto m = model_for(*base, c);
    const auto q = fx<float>(kRef, c.name + ".q"), k = fx<float>(kRef, c.name + ".k"), v = fx<float>(kRef, c.name + ".v");
    REQUIRE(q.size() == size_t(c.T) * H * D);
    const auto want = fx<double>(kRef, c.name + ".y");
    // One prompt (G = 0: the parallel prefill), token by token, and chunks that straddle blocks.
    for (const std::vector<int>& chunks : std::vector<std::vector<int>>{{c.T}, {1}, {7, 1, 50, 64, 3}}) {
      INFO(c.name << ", first chunks " << chunks[0]);
      LolcatsMemory memory(*m, DecodeMode::exact, {c.G, c.sinks});
      const std::vector<float> y = attend_layer0(memory, q, k, v, c.T, chunks, Device::cpu, DType::f32);
      // f32 state and features against float64: S and z sum up to 300 keys' O(1) terms (relative
      // rounding ~1e-6), the attention is accumulated in double: 2e-5 leaves margin, while a key
      // misplaced between the cache and the state moves outputs by O(0.01-1).
      CHECK_CLOSE(c.name + " y", y, want, 2e-5, 2e-5);
      if (c.G == 0) continue;
      const auto cached = fx<double>(kRef, c.name + ".cached");  // (H, G), -1 past the cache's length
      const LolcatsMemory::Layer& st = memory.layers[0];
      std::vector<double> got(size_t(H) * c.G, -1.0);
      for (int h = 0; h < H; h++)
        for (int i = 0; i < st.cache_n[size_t(h)]; i++) got[size_t(h) * c.G + i] = st.cache_pos[size_t(h) * c.G + i];
      CHECK(got == cached);
    }
  }
}

TEST_CASE("sparse cache: G at least the length is softmax attention, the teacher's decode", "[sparse_cache][decode][lolcats]") {
  auto base = Llama::load(fixture_dir() + "/tiny_llama");
  const int V = base->cfg.vocab;
  const auto seqs = random_sequences({200, 150, 180}, V, 3);
  // Prompts in one step, in chunks and token by token, sequences joining late.
  const std::vector<std::vector<int>> plan = join_plan(0, 10, 90);
  const std::vector<float> teacher = run_plan(*make_decoder(*base), 200, seqs, V, plan);
  for (HybridVariant var : {HybridVariant::terrace, HybridVariant::sw}) {
    INFO(variant_name(var));
    LolcatsConfig cfg;
    cfg.variant = var;
    LolcatsModel m(*base, cfg);
    perturb(m, 5);  // feature maps and window factors of no consequence: no key reaches the state
    const std::vector<float> got = run_plan(*make_decoder(m, DecodeMode::exact, 200), 200, seqs, V, plan);
    // Two f32 paths of one softmax (the KV cache's in f32, ours in double, g cancelling): 1e-4.
    CHECK_CLOSE("G >= T logits", got, std::vector<double>(teacher.begin(), teacher.end()), 1e-4, 1e-4);
    // One key fewer in the cache than the sequences hold: the state is used, and it shows.
    const std::vector<float> short_cache = run_plan(*make_decoder(m, DecodeMode::exact, 64), 200, seqs, V, plan);
    double diff = 0;
    for (size_t i = 0; i < got.size(); i++) diff = std::max(diff, double(std::fabs(got[i] - short_cache[i])));
    CHECK(diff > 1e-3);
  }
}

// G = 0's outputs are held to ref_lola.py's G = 0 cases above and, as the paper's layer, to the
// parallel forward (tests/test_lolcats_model.cpp).
TEST_CASE("sparse cache: G = 0 allocates no cache; a cache's memory is constant in the context",
          "[sparse_cache][decode][lolcats]") {
  auto base = Llama::load(fixture_dir() + "/tiny_llama");
  LolcatsModel m(*base, LolcatsConfig{});
  auto paper = make_decoder(m, DecodeMode::exact);
  paper->reserve(2, 100);
  REQUIRE(paper->state_bytes() > 0);
  CHECK(paper->state_bytes() == 2 * paper->sequence_bytes(100));
  // G pairs of (k, v, phi_k) and a position per query head and layer, a length per head: the same
  // at every max_len.
  const LlamaConfig& c = base->cfg;
  const size_t per_G = size_t(c.n_layers) * c.n_heads * ((2 * c.head_dim + m.F) * sizeof(float) + sizeof(int));
  auto with = make_decoder(m, DecodeMode::exact, 32);
  CHECK(with->sequence_bytes(100) == with->sequence_bytes(100000));
  CHECK(with->sequence_bytes(100) == paper->sequence_bytes(100) + 32 * per_G + size_t(c.n_layers) * c.n_heads * sizeof(int));
}

TEST_CASE("sparse cache: refused where it has no meaning, with the reason", "[sparse_cache][decode][lolcats]") {
  auto base = Llama::load(fixture_dir() + "/tiny_llama");
  LolcatsConfig cfg;
  cfg.variant = HybridVariant::linear;
  LolcatsModel linear(*base, cfg);
  CHECK_THROWS_WITH(make_decoder(linear, DecodeMode::exact, 8), Catch::Contains("no softmax window"));
  LolcatsModel m(*base, LolcatsConfig{});
  CHECK_THROWS_WITH(make_decoder(m, DecodeMode::exact, kMaxSparseCache + 1),
                    Catch::Contains("--sparse-cache"));
  CHECK_THROWS_WITH(make_decoder(m, DecodeMode::exact, -1), Catch::Contains("--sparse-cache"));
}

TEST_CASE("the validation loss through the decoder equals the forward's; with G >= T, the teacher's",
          "[sparse_cache][decode][lolcats]") {
  auto base = Llama::load(fixture_dir() + "/tiny_llama");
  const int V = base->cfg.vocab, B = 2, T = 256;  // tiny_llama's max_position
  std::vector<int32_t> ids, targets;
  for (const auto& s : random_sequences({T, T}, V, 8)) ids.insert(ids.end(), s.begin(), s.end());
  for (int i = 0; i < B * T; i++) targets.push_back(i % 7 == 0 ? kIgnoreIndex : ids[size_t((i + 1) % (B * T))]);
  const Tensor idt = Tensor::from_i32(ids, {B, T}), tgt = Tensor::from_i32(targets, {B * T});
  NoGrad no_grad;
  LolcatsModel m(*base, LolcatsConfig{});
  perturb(m, 2);
  for (const LolcatsLayer& L : m.layers)  // g ~ 0.05: the state weighs in
    std::fill_n(L.wlogit->value.f32(), L.wlogit->value.numel(), -3.0f);
  const double teacher = double(item(base->forward_loss(idt, tgt))), student = double(item(m.loss(idt, tgt)));
  REQUIRE(std::fabs(teacher - student) > 5e-5 * teacher);  // 5x the tolerance below: the checks can fail
  // f32 logits, the loss summed in double: 1e-5 relative.
  CHECK(decoder_chunk_loss(*make_decoder(*base), idt, tgt) == Approx(teacher).epsilon(1e-5));
  CHECK(decoder_chunk_loss(*make_decoder(m, DecodeMode::exact), idt, tgt) == Approx(student).epsilon(1e-5));
  CHECK(decoder_chunk_loss(*make_decoder(m, DecodeMode::exact, T), idt, tgt) == Approx(teacher).epsilon(1e-5));
}

#ifdef LOLCATS_CUDA
TEST_CASE("cuda sparse cache equals the CPU memory: decode plans, f32 and bf16 storage", "[cuda][decode][lolcats][sparse_cache]") {
  SKIP_WITHOUT_CUDA();
  auto cpu_base = Llama::load(fixture_dir() + "/tiny_llama");
  const int V = cpu_base->cfg.vocab;
  // The whole model, f32: three sequences, prompts in chunks, a late joiner (as the recurrent test).
  const auto seqs = random_sequences({200, 150, 180}, V, 7);
  const std::vector<std::vector<int>> plan = join_plan(1, 100, 30);
  for (auto [var, fm, G, sinks] : {std::tuple{HybridVariant::terrace, FeatureMapKind::hedgehog, 5, 0},
                                   {HybridVariant::terrace, FeatureMapKind::hedgehog, 100, 8},
                                   {HybridVariant::sw, FeatureMapKind::t2r, 24, 4}}) {
    INFO(variant_name(var) << " " << feature_map_name(fm) << " G " << G << " sinks " << sinks);
    LolcatsConfig cfg;
    cfg.variant = var;
    cfg.feature_map = fm;
    cfg.softmax_layers = {1};
    LolcatsModel cpu(*cpu_base, cfg);
    perturb(cpu, 13);
    const std::vector<float> want = run_plan(*make_decoder(cpu, DecodeMode::exact, {G, sinks}), 200, seqs, V, plan);
    auto gpu_base = Llama::load(fixture_dir() + "/tiny_llama", Device::cuda, DType::f32);
    LolcatsModel gpu(*gpu_base, cfg);
    for (size_t i = 0; i < gpu.parameters().size(); i++) gpu.parameters()[i]->value.copy_from(cpu.parameters()[i]->value, "p");
    std::unique_ptr<Decoder> dec = make_decoder(gpu, DecodeMode::exact, {G, sinks});
    const std::vector<float> got = run_plan(*dec, 200, seqs, V, plan);
    // As the recurrent test: the CPU accumulates the attention and the recall errors in double,
    // the kernel in f32, the state folded in the same order: 1e-4.
    CHECK_CLOSE("device sparse-cache logits", got, std::vector<double>(want.begin(), want.end()), 1e-4, 1e-4);
  }
  // One layer, bf16 storage: random inputs rounded to bf16, the same values on both (no fixture: the
  // GPU bundle carries none for this), a pair repeated every 16 positions for ties.
  const int T = 300;
  auto rounded = [&](int heads, uint64_t seed) {
    std::vector<double> r = random_normal(int64_t(T) * heads * D, seed);
    std::vector<float> x(r.begin(), r.end());
    if (heads == Hkv)
      for (int t = 16; t < T; t += 16) std::copy_n(x.begin(), size_t(heads) * D, x.begin() + size_t(t) * heads * D);
    return bf16_rounded(x);
  };
  const auto q = rounded(H, 21), k = rounded(Hkv, 22), v = rounded(Hkv, 23);
  for (auto [var, G, sinks] : {std::tuple{HybridVariant::terrace, 5, 0}, {HybridVariant::terrace, 100, 8},
                               {HybridVariant::sw, 24, 4}}) {
    INFO("bf16 layer: " << variant_name(var) << " G " << G << " sinks " << sinks);
    LolcatsConfig cfg;
    cfg.variant = var;
    LolcatsModel cpu(*cpu_base, cfg);
    perturb(cpu, 17);
    auto gpu_base = Llama::load(fixture_dir() + "/tiny_llama", Device::cuda, DType::bf16);
    LolcatsModel gm(*gpu_base, cfg);
    for (size_t i = 0; i < gm.parameters().size(); i++) gm.parameters()[i]->value.copy_from(cpu.parameters()[i]->value, "p");
    LolcatsMemory cpu_memory(cpu, DecodeMode::exact, {G, sinks});
    const std::vector<float> want = attend_layer0(cpu_memory, q, k, v, T, {1}, Device::cpu, DType::f32);
    auto device_memory = make_lolcats_device_memory(gm, DecodeMode::exact, {G, sinks});
    const std::vector<float> got = attend_layer0(*device_memory, q, k, v, T, {9, 1, 70, 1}, Device::cuda, DType::bf16);
    // y is written in bf16 (relative step 2^-8) after f32 sums of O(1) terms: 1e-2.
    CHECK_CLOSE("bf16 y", got, std::vector<double>(want.begin(), want.end()), 1e-2, 1e-2);
  }
}
#endif
