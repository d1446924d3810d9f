// Constant-memory generation with a LoLCATs model: attention as a recurrence (LOLCATS.md 2.3).
//
// Per converted layer and query head: the linear-attention state S (F x D) and z (F), both fp32,
// summarising every key that has left the window; plus a ring of the last 2C = 128 post-RoPE keys
// and values (per kv head) for the exact softmax window. Memory does not depend on the length.
// Step at position P:
//   1. write k_P, v_P into the ring;
//   2. fold every key that no longer belongs to P's window into S += phi_k(k) v^T, z += phi_k(k);
//   3. y_P = (sum_window A v + phi_q(q_P) S) / (sum_window A + phi_q(q_P) . z).
// The window of P depends on the mode:
//   exact (default): the training variant's own window, so decode equals the parallel forward at
//     every position: terrace = blocks b(P)-1 and b(P); sw = the last 64 keys; linear = none.
//   reference: the published decoder's 64-key FIFO (current token included) whatever the training
//     variant: identical to the parallel form for sw, and for terrace up to position 63 only.
// A prompt on an empty state is prefilled with the parallel kernels (the training variant, as the
// reference does), then the state is built from its keys. Layers kept as softmax use a growing KV cache.
#pragma once
#include <vector>

#include "lolcats/model.h"
#include "nn/generate.h"

namespace lolcats {

enum class DecodeMode { exact, reference };
DecodeMode parse_decode_mode(const std::string& name);  // "exact", "reference"

struct LolcatsState {
  struct Layer {
    Tensor S;       // (H, F, D)
    Tensor z;       // (H, F)
    Tensor ring_k;  // (R, Hkv, D)  key of position j lives in slot j % R
    Tensor ring_v;  // (R, Hkv, D)
    int folded = 0;                   // keys 0 .. folded-1 are in S, z
    std::vector<float> cache_k, cache_v;  // softmax layers only: (length, Hkv, D), growing
  };
  static constexpr int kRing = 2 * kHybridBlock;
  LolcatsState(const LolcatsModel& model, DecodeMode mode);
  size_t bytes() const;  // memory held by the recurrent state (excluding softmax layers' caches)
  DecodeMode mode;
  int length = 0;        // positions processed so far
  std::vector<Layer> layers;
};

// Runs ids (1, T) through the model at positions state.length ..; returns logits (T, V).
Var lolcats_step(const LolcatsModel& model, LolcatsState& state, const Tensor& ids);

// Generation with the recurrent state (same sampling as nn/generate.h).
std::vector<int32_t> lolcats_generate(const LolcatsModel& model, const std::vector<int32_t>& prompt,
                                      const SamplingConfig& cfg, DecodeMode mode,
                                      const std::function<bool(int32_t)>& on_token = {});

}  // namespace lolcats
