// Log-likelihood scoring of continuations, the way the harness scores multiple-choice tasks:
//   loglik(context, continuation) = sum over continuation tokens t of log p(t | everything before)
//   greedy = whether every continuation token is the argmax of its distribution
// computed with a decoder (nn/decoder.h: either model, either device) instead of one full forward per request, because the
// requests of an item share most of their tokens:
//   - an item's requests share a token prefix (the context, or for WinoGrande the sentence up to
//     the blank): it is fed once, into one slot, and every request goes on from a copy of it;
//   - consecutive items may share a long prefix (MMLU's 5-shot examples of one subject): it is fed
//     once into an anchor slot (slot 0) and copied at the start of each item;
//   - several items go through the same steps, one slot per request, so each step reads the
//     weights once for many rows.
// With a softmax model this equals one forward of context + continuation per request (causal
// attention: a prefix's state does not depend on what follows); with a linearized model in exact
// mode the recurrence equals the parallel forward (lolcats/recurrent.h). The tests hold both to
// that, and the result to Hugging Face transformers.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "nn/decoder.h"

namespace lolcats {

struct LoglikRequest {
  std::vector<int32_t> context;       // non-empty
  std::vector<int32_t> continuation;  // non-empty
};
struct Loglik {
  double logprob = 0;  // summed over the continuation's tokens
  bool greedy = true;  // every continuation token was the most likely one
  int tokens = 0;      // continuation tokens
};

struct LoglikOptions {
  int max_slots = 32;                     // sequences in one step (one per request, plus the anchor)
  size_t max_state_bytes = size_t(2) << 30;  // bound on the decode state (KV caches) of all slots
  int max_rows = 512;                     // continuation rows per step (their logits: rows x V floats)
  int min_anchor = 32;                    // shortest prefix shared by consecutive items worth an anchor
};

// Scores items (each a list of requests) in order; result[i][k] belongs to items[i][k].
// progress(items done, tokens fed) after each batch.
std::vector<std::vector<Loglik>> score_loglik(Decoder& decoder,
                                              const std::vector<std::vector<LoglikRequest>>& items,
                                              const LoglikOptions& options = {},
                                              const std::function<void(size_t, size_t)>& progress = {});

// Scoring with one whole forward pass per request instead of the decode step, for a model whose
// output at a position depends on the sequence's length (a linearized model under the reference
// implementation's mask, whose blocks end at the last token: lolcats/hybrid_attention.h). The model
// sees what the harness gives it: each request's (context + continuation) minus its last token,
// alone (no padding). Requests of an item with the same input (MMLU's one-token letters) share one
// pass. tail_logits(ids, rows): the logits (rows, V), row after row, of the last `rows` positions.
using TailLogits = std::function<std::vector<float>(const std::vector<int32_t>& ids, int rows)>;
std::vector<std::vector<Loglik>> score_loglik_whole(const TailLogits& tail_logits, int V,
                                                    const std::vector<std::vector<LoglikRequest>>& items,
                                                    const std::function<void(size_t, size_t)>& progress = {});

}  // namespace lolcats

namespace lolcats {

// The mean next-token cross-entropy of ids (B, T) against targets (B*T; -100: ignored), through a
// decoder: the B rows are prompts fed together, a few hundred positions per step, with every
// position's logits. The validation loss of a memory that only the decoder has (the sparse cache,
// lolcats/sparse_cache.h); where the decoder equals the parallel forward it equals Llama::loss.
double decoder_chunk_loss(Decoder& decoder, const Tensor& ids, const Tensor& targets);

}  // namespace lolcats
