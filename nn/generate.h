// Autoregressive generation: prefill the prompt in one step, then one token
// per step. Sampling: greedy (temperature 0), or softmax(logits / temperature) restricted to the
// smallest set of tokens whose probability reaches top_p (nucleus sampling), with a seeded RNG so a
// run can be reproduced.
#pragma once
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "nn/llama.h"

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

// The sampling loop for any model that advances a state of its own: step(ids (1, n)) feeds n new
// tokens and returns their logits (n, V), or just the last one's (1, V). The prompt goes in as one step (prefill), then one token
// per step. Returns the generated ids (prompt excluded). on_token is called for each new id as it
// is made; returning false stops early.
using StepFn = std::function<Var(const Tensor& ids)>;
std::vector<int32_t> generate_with(const StepFn& step, int vocab, const std::vector<int32_t>& prompt,
                                   const SamplingConfig& cfg,
                                   const std::function<bool(int32_t)>& on_token = {});

// A Llama, through its decoder (llama_decoder: a KV cache, on the CPU or the cuda device).
std::vector<int32_t> generate(const Llama& model, const std::vector<int32_t>& prompt,
                              const SamplingConfig& cfg,
                              const std::function<bool(int32_t)>& on_token = {});

// What generate_batch drives: `batch` sequences advanced together. step(tokens, n, logits) feeds
// n[b] >= 0 tokens to sequence b (sum n[b] ids, sequence after sequence) and writes the logits of
// the last new token of every sequence with n[b] > 0 to logits + b * vocab; reset(b) empties
// sequence b. (A Llama's: nn/decode.h; a linearized model's: lolcats/recurrent.h.)
struct BatchDecoder {
  int batch = 0, vocab = 0;
  std::function<void(const int32_t* tokens, const int* n, float* logits)> step;
  std::function<void(int b)> reset;
};

// Many prompts at once: up to decoder.batch sequences decode together, each new token of every
// sequence in one step that reads the weights once; a finished sequence's slot takes the next
// prompt (prefilled in the same steps as the others' decoding). Prompt i samples with the seed
// cfg.seed + i, so its text does not depend on what it was batched with. on_done(i, ids) is called
// as each prompt finishes (in finishing order).
void generate_batch(const BatchDecoder& decoder, const std::vector<std::vector<int32_t>>& prompts,
                    const SamplingConfig& cfg,
                    const std::function<void(size_t, const std::vector<int32_t>&)>& on_done);

// The same for a Llama (llama_decoder), `batch` sequences at a time.
void generate_batch(const Llama& model, const std::vector<std::vector<int32_t>>& prompts, int batch,
                    const SamplingConfig& cfg,
                    const std::function<void(size_t, const std::vector<int32_t>&)>& on_done);

// A Llama's decoder for `batch` sequences of up to max_len tokens (the state is the decoder's own):
// the plain-code step of nn/decode.h on the CPU, its op-layer twin (nn/decode_device.h) on the
// cuda device.
BatchDecoder llama_decoder(const Llama& model, int batch, int max_len);

// One prompt through a decoder of batch 1: prefill, then a token per step (as generate_with).
std::vector<int32_t> generate_one(const BatchDecoder& decoder, const std::vector<int32_t>& prompt,
                                  const SamplingConfig& cfg, const std::function<bool(int32_t)>& on_token = {});

// The longest sequence generate_batch can make of these prompts (prompt + new tokens): what a
// decoder's KV cache must hold.
int longest_sequence(const std::vector<std::vector<int32_t>>& prompts, const SamplingConfig& cfg);

}  // namespace lolcats
