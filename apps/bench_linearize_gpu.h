// ./bench linearize-8b --device cuda: both LoLCATs stages at the paper's shape on the GPU, as
// ./linearize --device cuda runs them: random bf16 weights of `--config` (Llama 3 8B by default) made
// on the device, batch 1, T = --seq (1024), the default conversion (terrace, Hedgehog Fh = 64).
//   stage1  attention_transfer(model, ids, 1) + AdamW over the feature maps and window factors
//   stage2  LoRA r=8 alpha=16 on q, k, v, o (bf16 working copies of f32 masters), layers recomputed
//           in the backward: backward(model.loss(ids, targets)) + AdamW over the LoRA
// One warm-up step, then --train-steps timed steps (wall clock, synchronised by the losses' reads).
// Reported per stage: tokens/s, peak device memory (the caching allocator's; 0 under the emulator,
// which does not count), model FLOP utilisation, and the projected time
// for the paper's 20M tokens per stage; then one more step under the op profile
// (tensor/op_profile.h), one row per kind of op: its milliseconds per step from CUDA events beside
// its floor (its FLOPs over the card's dense bf16 peak or its bytes over the card's bandwidth,
// whichever is longer; card_peaks below), and the memory the card lost (total minus free, as the
// runtime reports it: reserved blocks, cuBLASLt's workspace and the context included) beside the
// memory plan's figure for the stage (lolcats/memory_plan.h). Model FLOPs per token, counting the projections and MLPs
// only (P = their parameters, the embedding and LM head aside; attention and recomputation not
// counted): stage 1 is a frozen forward, 2 P; stage 2 a forward and the input gradients (frozen
// weights get no weight gradients), 4 P, plus 4 V C for the LM head. Utilisation is against the
// card's dense bf16 peak (card_peaks below: 989 TFLOP/s on an H100/H200 SXM).
//
// Included by apps/bench.cpp after its helpers (bench_tokens, gpu_summary); CUDA builds only.
#pragma once
#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "cuda/attention.h"
#include "cuda/hybrid_attention.h"
#include "cuda/bench_kernels.h"
#include "lolcats/memory_plan.h"
#include "lolcats/model.h"
#include "lolcats/stages.h"
#include "nn/adamw.h"
#include "nn/llama.h"
#include "tensor/op_profile.h"

// A card's dense bf16 tensor-core peak and memory bandwidth (the vendors' data sheets), by the
// name the runtime gives; cards not listed (and the emulator) are taken as an H100 SXM, and say so.
struct CardPeaks {
  double tflops, gb_per_s;
  std::string card;
};
inline CardPeaks card_peaks(const std::string& gpu) {
  struct Row { const char* name; double tflops, gb_per_s; };
  static const Row rows[] = {{"H200", 989, 4800},     {"H100 PCIe", 756, 2000}, {"H100 NVL", 835, 3900},
                             {"H100", 989, 3350},     {"A100-SXM4-40GB", 312, 1555}, {"A100", 312, 2039},
                             {"L40S", 362, 864},      {"L4", 121, 300},         {"RTX 4090", 165, 1008},
                             {"RTX 3090", 71, 936},   {"A10", 125, 600}};
  for (const Row& r : rows)
    if (gpu.find(r.name) != std::string::npos) return {r.tflops, r.gb_per_s, r.name};
  return {989, 3350, "assumed H100 SXM"};
}

// One more `step` under the op profile: a row per kind of op (ms per step, calls, work, floor, its
// share of the unprofiled step's `sec`), and the step's time no kind accounts for (the host's own
// work, waits and copies between ops).
inline void print_op_profile(const nlohmann::json& common, const char* stage, double sec, const CardPeaks& peaks,
                             const std::function<void()>& step) {
  using namespace lolcats;
  op_profile_begin();
  step();
  const OpProfile p = op_profile_end();
  double profiled = 0;
  for (int k = 0; k < kOpKinds; k++) {
    nlohmann::json j = common;
    j["stage"] = stage;
    j["op_kind"] = op_kind_name(OpKind(k));
    j["ms_per_step"] = p.ms[size_t(k)];
    j["calls"] = p.calls[size_t(k)];
    j["gflop"] = p.flops[size_t(k)] / 1e9;
    j["gbytes"] = p.bytes[size_t(k)] / 1e9;
    j["floor_ms"] = 1e3 * std::max(p.flops[size_t(k)] / (peaks.tflops * 1e12), p.bytes[size_t(k)] / (peaks.gb_per_s * 1e9));
    j["floor_of"] = strfmt("%s: %.0f TFLOP/s bf16, %.0f GB/s", peaks.card.c_str(), peaks.tflops, peaks.gb_per_s);
    j["share"] = p.ms[size_t(k)] / (1e3 * sec);
    profiled += p.ms[size_t(k)];
    std::printf("%s\n", j.dump().c_str());
  }
  nlohmann::json j = common;
  j["stage"] = stage;
  j["op_kind"] = "unprofiled (host, copies, waits)";
  j["ms_per_step"] = std::max(0.0, 1e3 * sec - profiled);
  j["floor_ms"] = 0.0;
  j["share"] = j["ms_per_step"].get<double>() / (1e3 * sec);
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

inline int bench_linearize_device(const std::string& config, int T, int steps, int layers) {
  using namespace lolcats;
  using nlohmann::json;
  LlamaConfig c = named_config(config);
  if (layers > 0) c.n_layers = std::min(layers, c.n_layers);  // --layers: a cut-down model (smoke runs)
  Llama base(c, Device::cuda, DType::bf16);
  unsigned seed = 1;
  for (const Var& p : base.parameters()) {  // norms 1, matrices uniform with std 0.02
    const bool norm = p->value.ndim() == 1;
    cuda::bench::fill_uniform(p->value.dev<cuda::bf16>(), size_t(p->value.numel()), true, seed++,
                              norm ? 0.0f : 0.02f * 1.7320508f, norm ? 1.0f : 0.0f);
  }
  auto [x, targets] = bench_tokens(T, c.vocab);
  LolcatsModel model(base, LolcatsConfig{});

  const double P = double(c.n_layers) * (double(c.d_model) * c.n_heads * c.head_dim * 2 +
                                         double(c.d_model) * c.n_kv_heads * c.head_dim * 2 +
                                         3.0 * c.d_model * c.ffn);
  const double paper_tokens = 20e6;
  const CardPeaks peaks = card_peaks(gpu_summary());
  const MemoryPlan plan = plan_linearize_memory(c, LolcatsConfig{}, T, 1, 8);
  json common = {{"bench", "linearize-8b"}, {"model", config}, {"layers", c.n_layers}, {"device", "cuda"},
                 {"gpu", gpu_summary()}, {"weights", "bf16"}, {"batch", 1}, {"seq", T}, {"steps", steps}};
  {  // the tiles the card's shared memory per block gives the attention kernels (rows x cols, KiB)
    auto tile = [](const cuda::KernelTile& t) { return strfmt("%dx%d %.1f KiB", t.rows, t.cols, t.shared_bytes / 1024.0); };
    const cuda::HybridAttentionTiles h = cuda::hybrid_attention_tiles(c.head_dim, model.F);
    const cuda::AttentionTiles a = cuda::attention_tiles(c.head_dim);
    std::fprintf(stderr, "bench linearize-8b: tiles: hybrid forward %s, query %s, key %s; attention forward %s, dq %s, dkdv %s\n",
                 tile(h.forward).c_str(), tile(h.query).c_str(), tile(h.key).c_str(), tile(a.forward).c_str(),
                 tile(a.dq).c_str(), tile(a.dkdv).c_str());
  }
  double hours = 0;
  auto timed = [&](const char* stage, int stage_number, double flop_per_token, const std::function<void()>& step) {
    step();  // warm-up: the caching allocator fills, cuBLASLt picks its algorithms
    device_memory_reset_peak();
    const double t0 = lolcats::seconds_now();
    for (int i = 0; i < steps; i++) step();
    device_synchronize();
    const double sec = (lolcats::seconds_now() - t0) / steps, tps = T / sec;
    json j = common;
    j["stage"] = stage;
    j["seconds_per_step"] = sec;
    j["tokens_per_s"] = tps;
    j["peak_device_mib"] = device_memory_stats().peak / 1048576.0;
    j["model_tflop_per_s"] = flop_per_token * tps / 1e12;
    j["mfu"] = flop_per_token * tps / (peaks.tflops * 1e12);
    j["hours_for_20m_tokens"] = paper_tokens / tps / 3600.0;
    const DeviceMemoryInfo card = device_memory_info();
    j["card_used_mib"] = (card.total - card.free) / 1048576.0;
    j["plan_mib"] = (plan.stage(stage_number)->total() + plan.context) / 1048576.0;
    hours += paper_tokens / tps / 3600.0;
    std::printf("%s\n", j.dump().c_str());
    std::fflush(stdout);
    print_op_profile(common, stage, sec, peaks, step);
  };

  AdamWConfig ac;
  ac.weight_decay = 0.0f;
  ac.lr = 1e-3f;
  AdamW opt1(model.parameters(), ac);
  std::fprintf(stderr, "bench linearize-8b: %s; stage 1: %s\n", base.memory_report().c_str(),
               opt1.memory_report().c_str());
  timed("stage1", 1, 2 * P, [&] {
    opt1.zero_grad();
    attention_transfer(model, x, 1.0f);
    opt1.step();
  });

  for (const Var& p : model.parameters()) p->requires_grad = false;  // frozen in stage 2
  std::vector<Var> lora;
  for (auto& [name, v] : base.add_lora(8, 16.0f, {"q", "k", "v", "o"}, 0)) lora.push_back(v);
  ac.lr = 1e-4f;
  AdamW opt2(lora, ac);
  std::fprintf(stderr, "bench linearize-8b: stage 2: %s\n", opt2.memory_report().c_str());
  timed("stage2", 2, 4 * P + 4.0 * c.vocab * c.d_model, [&] {
    opt2.zero_grad();
    backward(model.loss(x, targets, Recompute::layers));
    opt2.step();
  });
  json j = common;
  j["stage"] = "both";
  j["hours_for_20m_plus_20m_tokens"] = hours;
  j["reference"] = "6.5 h on one A100-40GB (the paper's PyTorch code)";
  std::printf("%s\n", j.dump().c_str());
  return 0;
}
