// Helpers of the decoding tests (tests/test_cuda_decode.cpp, tests/test_lolcats_model.cpp,
// tests/test_sparse_cache.cpp): token sequences, step plans, parameters moved off their init.
#pragma once
#include <random>
#include <vector>

#include "autograd/gradcheck.h"
#include "lolcats/model.h"
#include "nn/decoder.h"

namespace lolcats_test {

// Sequences fed by a plan of steps (new tokens per sequence per step): chunks, single tokens,
// nothing, a sequence joining late. Returns every step's logits of each sequence's last new token,
// concatenated, from a decoder of max_len tokens.
inline std::vector<float> run_plan(lolcats::Decoder& dec, int max_len, const std::vector<std::vector<int32_t>>& seqs,
                                   int V, const std::vector<std::vector<int>>& plan) {
  dec.reserve(int(seqs.size()), max_len);
  std::vector<int> fed(seqs.size(), 0);
  std::vector<float> logits(seqs.size() * size_t(V)), out;
  for (const std::vector<int>& n : plan) {
    std::vector<int32_t> tokens;
    for (size_t b = 0; b < seqs.size(); b++)
      tokens.insert(tokens.end(), seqs[b].begin() + fed[b], seqs[b].begin() + fed[b] + n[b]);
    dec.step(tokens.data(), n.data(), logits.data());
    for (size_t b = 0; b < seqs.size(); b++) {
      fed[b] += n[b];
      if (n[b] > 0) out.insert(out.end(), logits.begin() + b * V, logits.begin() + (b + 1) * V);
    }
  }
  return out;
}

inline std::vector<std::vector<int32_t>> random_sequences(const std::vector<int>& lengths, int V, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::vector<int32_t>> seqs;
  for (int T : lengths) {
    std::vector<int32_t> ids(static_cast<size_t>(T));
    for (int32_t& t : ids) t = int32_t(rng() % uint32_t(V));
    seqs.push_back(ids);
  }
  return seqs;
}

// The plan of three sequences of 200, 150 and 180 tokens: prompts of 1, 70 and (joining at the third
// step) 130 tokens, then one token per step each, except one long chunk of `chunk` rows for sequence
// `seq` once it holds `at` tokens (its rows' windows read each other).
inline std::vector<std::vector<int>> join_plan(int seq, int at, int chunk) {
  const std::vector<int> lengths = {200, 150, 180};
  std::vector<std::vector<int>> plan = {{1, 70, 0}, {1, 1, 0}, {1, 1, 130}};
  std::vector<int> fed = {3, 72, 130};
  while (fed[0] < lengths[0] || fed[1] < lengths[1] || fed[2] < lengths[2]) {
    std::vector<int> n(3);
    for (size_t b = 0; b < 3; b++) n[b] = fed[b] < lengths[b] ? 1 : 0;
    if (fed[size_t(seq)] == at) n[size_t(seq)] = chunk;
    for (size_t b = 0; b < 3; b++) fed[b] += n[b];
    plan.push_back(n);
  }
  return plan;
}

// Feature maps and window factors away from their init, so every part carries signal.
inline void perturb(lolcats::LolcatsModel& m, uint64_t seed) {
  for (const lolcats::Var& p : m.parameters()) {
    std::vector<double> r = lolcats::random_normal(p->value.numel(), seed++, 0.3);
    for (int64_t i = 0; i < p->value.numel(); i++) p->value.f32()[i] += float(r[i]);
  }
}

}  // namespace lolcats_test
