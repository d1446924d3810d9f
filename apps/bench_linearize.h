// ./bench linearize: one LoLCATs training step of each stage on SmolLM2-135M (real weights when
// models/ has them, else random: speed is the same), batch 1, f32, the default conversion (terrace,
// Fh = 64, every layer converted):
//   stage1  model.forward_transfer(ids, 1) (teacher-forced forward, each layer's MSE differentiated
//           into its feature maps and window factors) + AdamW(lr 1e-2, wd 0) over model.parameters()
//   stage2  LoRA r=8 alpha=16 on q, k, v, o, feature maps frozen: cross_entropy(model.forward(ids))
//           + backward + AdamW(lr 1e-4, wd 0) over the LoRA parameters
// Warm-up once, then the best of 3; tokens/s = T / seconds. The same two steps in PyTorch come from
// tests/reference/bench_linearize.py (same shapes and threads), reported beside ours with the ratio.
//
// Included by apps/bench.cpp after its helpers: uses its best_of(), smollm2_or_random(),
// bench_tokens(), run_torch(), peak_rss_mib() and emit_vs_torch().
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
#include "nn/adamw.h"
#include "nn/llama.h"

inline int bench_linearize(int threads, int T, const std::string& model_path) {
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
  double stage1 = best_of(3, [&] {
    opt1.zero_grad();
    model.forward_transfer(x, 1.0f);
    opt1.step();
  });
  double stage1_rss = peak_rss_mib();

  for (const Var& p : model.parameters()) p->requires_grad = false;  // frozen in stage 2
  std::vector<Var> lora;
  for (auto& [name, v] : base->add_lora(8, 16.0f, {"q", "k", "v", "o"}, 0)) lora.push_back(v);
  ac.lr = 1e-4f;
  AdamW opt2(lora, ac);
  std::fprintf(stderr, "bench linearize: stage 2 memory: %s\n", opt2.memory_report().c_str());
  double stage2 = best_of(3, [&] {
    opt2.zero_grad();
    backward(cross_entropy(model.forward(x), targets));
    opt2.step();
  });
  double stage2_rss = peak_rss_mib();

  std::map<std::string, json> theirs;
  for (const json& j : run_torch("bench_linearize.py --threads " + std::to_string(threads) +
                                 " --seq " + std::to_string(T)))
    theirs[j["what"].get<std::string>()] = j;
  for (auto [stage, sec, rss] :
       {std::tuple{"stage1", stage1, stage1_rss}, std::tuple{"stage2", stage2, stage2_rss}})
    emit_vs_torch({{"bench", "linearize"}, {"model", "SmolLM2-135M"}, {"stage", stage}, {"batch", 1},
                   {"seq", T}, {"dtype", "f32"}, {"threads", threads}, {"peak_rss_mib", rss}},
                  sec, T, theirs.count(stage) ? &theirs[stage] : nullptr);
  return 0;
}
