// Constant-memory generation with a LoLCATs model: attention as a recurrence (LOLCATS.md 2.3), as
// plain code on the Llama decode step (nn/decode.h), for a batch of sequences at once.
//
// Per converted layer, sequence and query head: the linear-attention state S (F x D) and z (F),
// both fp32, summarising every key that has left the window; plus a ring of the last 2C = 128
// post-RoPE keys and values (per kv head) for the exact softmax window. Memory does not depend on
// the length. Step at position P:
//   1. write k_P, v_P into the ring;
//   2. fold every key that no longer belongs to P's window into S += phi_k(k) v^T, z += phi_k(k);
//   3. y_P = (sum_window A v + phi_q(q_P) S) / (sum_window A + phi_q(q_P) . z).
// The window of P depends on the mode:
//   exact (default): the training variant's own window, so decode equals the parallel forward at
//     every position: terrace = blocks b(P)-1 and b(P); sw = the last 64 keys; linear = none.
//   reference: the published decoder's 64-key FIFO (current token included) whatever the training
//     variant: identical to the parallel form for sw, and for terrace up to position 63 only.
// A prompt on an empty sequence is prefilled with the parallel kernels (the training variant, as
// the reference does), then the state is built from its keys. Layers kept as softmax use the
// decode step's KV cache.
#pragma once
#include <vector>

#include "lolcats/model.h"
#include "nn/decode.h"
#include "nn/generate.h"
#include "nn/loglik.h"

namespace lolcats {

enum class DecodeMode { exact, reference };
DecodeMode parse_decode_mode(const std::string& name);  // "exact", "reference"

// First key of position P's window under v's rule (terrace: the previous and the current 64-token
// block; sw: the last 64 keys; linear: none, P + 1): keys before it live in S, z.
int window_start(int P, HybridVariant v);
// Per layer, whether it keeps softmax attention (and so a KV cache) rather than being converted.
std::vector<bool> kept_as_softmax(const LolcatsModel& model);

struct LolcatsDecodeState {
  static constexpr int kRing = 2 * kHybridBlock;  // R: key j lives in ring slot j % R
  // max_len bounds only the sequences' KV caches of layers kept as softmax (if there are any).
  LolcatsDecodeState(const LolcatsModel& model, int batch, int max_len, DecodeMode mode);
  struct Layer {                       // a converted layer (empty for a softmax one)
    std::vector<float> S;              // (batch, H, F, D)
    std::vector<float> z;              // (batch, H, F)
    std::vector<float> ring_k, ring_v; // (batch, R, Hkv, D)
    std::vector<int> folded;           // (batch) keys 0 .. folded-1 are in S, z
  };
  DecodeMode mode;
  HybridVariant window;       // whose window rule decoding follows (reference mode: sw's)
  LlamaDecodeState trunk;     // positions, the kept layers' KV caches, the step's scratch
  std::vector<Layer> layers;  // (L)
  std::vector<int> row0;      // (batch) scratch: each sequence's first row in the step
  int length(int b) const { return trunk.length[size_t(b)]; }
  void reset(int b);           // sequence b starts over
  // Sequence `to` becomes a copy of sequence `from`: length, S, z, ring, folded counts and the
  // kept layers' KV cache, so several continuations of one prefix go on from its state.
  void copy_sequence(int from, int to);
  // Takes sequence b to hold P tokens whose keys, values and state are whatever the buffers hold:
  // for benchmarks, where a step's time depends on the length and not on the values.
  void assume_length(int b, int P);
  size_t state_bytes() const;  // S, z and rings of every sequence: fixed at construction
  size_t bytes() const { return state_bytes() + trunk.cache_bytes(); }
};

// Feeds tokens (sum n[b] ids, sequence after sequence) to the batch; for every sequence with
// n[b] > 0 writes the logits of its last new token to logits + b * V (with
// state.trunk.every_row_logits: of every new token, (sum n[b], V)). CPU; base weights in f32 or
// bf16, an active LoRA applied (nn/decode.h).
void lolcats_decode_step(const LolcatsModel& model, LolcatsDecodeState& state, const int32_t* tokens,
                         const int* n, float* logits);

// The recurrent decode as a SequenceDecoder (log-likelihood scoring, nn/loglik.h).
class LolcatsSequenceDecoder : public SequenceDecoder {
 public:
  LolcatsSequenceDecoder(const LolcatsModel& model, DecodeMode mode) : model_(model), mode_(mode) {}
  int vocab() const override { return model_.base.cfg.vocab; }
  void reserve(int batch, int max_len) override;
  size_t sequence_bytes(int max_len) const override;
  void step(const int32_t* tokens, const int* n, float* logits, bool every_row) override;
  void copy(int from, int to) override { state_->copy_sequence(from, to); }
  void reset(int b) override { state_->reset(b); }

 private:
  const LolcatsModel& model_;
  DecodeMode mode_;
  std::unique_ptr<LolcatsDecodeState> state_;
};

// Generation with the recurrent state (same sampling as nn/generate.h).
std::vector<int32_t> lolcats_generate(const LolcatsModel& model, const std::vector<int32_t>& prompt,
                                      const SamplingConfig& cfg, DecodeMode mode,
                                      const std::function<bool(int32_t)>& on_token = {});

// Many prompts, `batch` at a time (nn/generate.h generate_batch).
void lolcats_generate_batch(const LolcatsModel& model, const std::vector<std::vector<int32_t>>& prompts,
                            int batch, const SamplingConfig& cfg, DecodeMode mode,
                            const std::function<void(size_t, const std::vector<int32_t>&)>& on_done);

}  // namespace lolcats
