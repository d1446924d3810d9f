// Autoregressive generation on a Decoder (nn/decoder.h: any model, any device): prefill the prompt
// in one step, then one token per step. Sampling: greedy (temperature 0), or softmax(logits / temperature) restricted to the
// smallest set of tokens whose probability reaches top_p (nucleus sampling), with a seeded RNG so a
// run can be reproduced.
#pragma once
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "nn/decoder.h"

namespace lolcats {

struct SamplingConfig {
  int max_new_tokens = 256;
  float temperature = 0.0f;  // 0 = greedy
  float top_p = 1.0f;
  uint64_t seed = 0;
  std::vector<int32_t> stop_ids;  // generation ends after producing one of these
};

// logits (V) -> token id.
int32_t sample_token(const float* logits, int V, float temperature, float top_p, std::mt19937_64& rng);

// One prompt: reserves the decoder for one sequence of prompt + max_new_tokens, feeds the prompt in
// one step (prefill), then one token per step. Returns the generated ids (prompt excluded). on_token
// is called for each new id as it is made; returning false stops early.
std::vector<int32_t> generate(Decoder& decoder, const std::vector<int32_t>& prompt, const SamplingConfig& cfg,
                              const std::function<bool(int32_t)>& on_token = {});

// Many prompts at once: reserves the decoder for up to `batch` sequences, which decode together,
// each new token of every sequence in one step that reads the weights once; a finished sequence's
// slot takes the next prompt (prefilled in the same steps as the others' decoding). Prompt i
// samples with the seed cfg.seed + i, so its text does not depend on what it was batched with.
// on_done(i, ids) is called as each prompt finishes (in finishing order).
void generate_batch(Decoder& decoder, const std::vector<std::vector<int32_t>>& prompts, int batch,
                    const SamplingConfig& cfg,
                    const std::function<void(size_t, const std::vector<int32_t>&)>& on_done);

// The longest sequence generate_batch can make of these prompts (prompt + new tokens): what a
// decoder's KV cache must hold.
int longest_sequence(const std::vector<std::vector<int32_t>>& prompts, const SamplingConfig& cfg);

}  // namespace lolcats
