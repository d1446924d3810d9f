// ./bench linearize-8b --device cuda: both LoLCATs stages at the paper's shape on the GPU, as
// ./linearize --device cuda runs them: random bf16 weights of `--config` (Llama 3 8B by default) made
// on the device, batch 1, T = --seq (1024), the default conversion (terrace, Hedgehog Fh = 64).
//   stage1  attention_transfer(model, ids, 1) + AdamW over the feature maps and window factors
//   stage2  LoRA r=8 alpha=16 on q, k, v, o (bf16 working copies of f32 masters), layers recomputed
//           in the backward: backward(model.loss(ids, targets)) + AdamW over the LoRA
// One warm-up step, then --train-steps timed steps (wall clock, synchronised by the losses' reads).
// Reported per stage: tokens/s, peak device memory (the caching allocator's; 0 under the emulator,
// which does not count), model FLOP utilisation, and the projected time
// for the paper's 20M tokens per stage. Model FLOPs per token, counting the projections and MLPs
// only (P = their parameters, the embedding and LM head aside; attention and recomputation not
// counted): stage 1 is a frozen forward, 2 P; stage 2 a forward and the input gradients (frozen
// weights get no weight gradients), 4 P, plus 4 V C for the LM head. Utilisation is against the
// H100/H200 SXM dense bf16 peak, 989 TFLOP/s.
//
// Included by apps/bench.cpp after its helpers (bench_tokens, gpu_summary); CUDA builds only.
#pragma once
#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "cuda/bench_kernels.h"
#include "lolcats/model.h"
#include "lolcats/stages.h"
#include "nn/adamw.h"
#include "nn/llama.h"

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
  const double peak_tflops = 989.0, paper_tokens = 20e6;
  json common = {{"bench", "linearize-8b"}, {"model", config}, {"layers", c.n_layers}, {"device", "cuda"},
                 {"gpu", gpu_summary()}, {"weights", "bf16"}, {"batch", 1}, {"seq", T}, {"steps", steps}};
  double hours = 0;
  auto timed = [&](const char* stage, double flop_per_token, const std::function<void()>& step) {
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
    j["mfu"] = flop_per_token * tps / (peak_tflops * 1e12);
    j["hours_for_20m_tokens"] = paper_tokens / tps / 3600.0;
    hours += paper_tokens / tps / 3600.0;
    std::printf("%s\n", j.dump().c_str());
    std::fflush(stdout);
  };

  AdamWConfig ac;
  ac.weight_decay = 0.0f;
  ac.lr = 1e-3f;
  AdamW opt1(model.parameters(), ac);
  std::fprintf(stderr, "bench linearize-8b: %s; stage 1: %s\n", base.memory_report().c_str(),
               opt1.memory_report().c_str());
  timed("stage1", 2 * P, [&] {
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
  timed("stage2", 4 * P + 4.0 * c.vocab * c.d_model, [&] {
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
