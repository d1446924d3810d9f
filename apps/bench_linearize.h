// ./bench linearize: one LoLCATs training step of each stage on SmolLM2-135M (real weights when
// models/ has them, else random: speed is the same), batch 1, f32, the default conversion (terrace,
// Fh = 64, every layer converted):
//   stage1  attention_transfer(model, ids, 1) (the teacher-forced loop of lolcats/stages.h, each layer's MSE differentiated
//           into its feature maps and window factors) + AdamW(lr 1e-2, wd 0) over model.parameters()
//   stage2  LoRA r=8 alpha=16 on q, k, v, o, feature maps frozen: cross_entropy(model.forward(ids))
//           + backward + AdamW(lr 1e-4, wd 0) over the LoRA parameters
// Each step timed --reps times interleaved with the same step in PyTorch
// (tests/reference/bench_linearize.py --serve: same shapes and threads; apps/bench_interleave.h);
// tokens/s = T / the median, with the spreads and the per-pair ratio.
//
// Included by apps/bench.cpp after its helpers: uses its smollm2_or_random(), bench_tokens(),
// peak_rss_mib(), interleaved(), with_activations() and emit_interleaved().
#pragma once
#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "autograd/ops.h"
#include "lolcats/model.h"
#include "lolcats/stages.h"
#include "nn/adamw.h"
#include "nn/llama.h"

inline int bench_linearize(int threads, int T, const std::string& model_path, int reps) {
  using namespace lolcats;
  using nlohmann::json;
  std::unique_ptr<Llama> base = smollm2_or_random(model_path);
  auto [x, targets] = bench_tokens(T, base->cfg.vocab);

  LolcatsModel model(*base, LolcatsConfig{});
  AdamWConfig ac;
  ac.weight_decay = 0.0f;
  ac.lr = 1e-2f;
  AdamW opt1(model.parameters(), ac);
  std::fprintf(stderr, "bench linearize: stage 1 memory: %s; %s\n", base->memory_report().c_str(),
               opt1.memory_report().c_str());
  TorchServer torch("bench_linearize.py --threads " + std::to_string(threads) + " --seq " + std::to_string(T));
  json stage1 = with_activations(Device::cpu, [&] {
    return interleaved(reps, [&] {
      opt1.zero_grad();
      attention_transfer(model, x, 1.0f);
      opt1.step();
    }, &torch, "stage1");
  });
  double stage1_rss = peak_rss_mib(), torch1_rss = torch.peak_rss_mib();

  for (const Var& p : model.parameters()) p->requires_grad = false;  // frozen in stage 2
  std::vector<Var> lora;
  for (auto& [name, v] : base->add_lora(8, 16.0f, {"q", "k", "v", "o"}, 0)) lora.push_back(v);
  ac.lr = 1e-4f;
  AdamW opt2(lora, ac);
  std::fprintf(stderr, "bench linearize: stage 2 memory: %s\n", opt2.memory_report().c_str());
  json stage2 = with_activations(Device::cpu, [&] {
    return interleaved(reps, [&] {
      opt2.zero_grad();
      backward(cross_entropy(model.forward(x), targets));
      opt2.step();
    }, &torch, "stage2");
  });
  double stage2_rss = peak_rss_mib(), torch2_rss = torch.peak_rss_mib();

  for (auto [stage, m, rss, trss] : {std::tuple{"stage1", stage1, stage1_rss, torch1_rss},
                                     std::tuple{"stage2", stage2, stage2_rss, torch2_rss}})
    emit_interleaved({{"bench", "linearize"}, {"model", "SmolLM2-135M"}, {"stage", stage}, {"batch", 1}, {"seq", T},
                      {"dtype", "f32"}, {"threads", threads}, {"peak_rss_mib", rss}, {"torch_peak_rss_mib", trss}},
                     m, T);
  return 0;
}
