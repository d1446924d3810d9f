// A Llama converted to LoLCATs (LOLCATS.md 2-3): every attention layer, except those kept as
// softmax, gets Hedgehog feature maps for q and k and per-head window factors; the base weights
// stay as they are (frozen unless made trainable).
//
// Two ways to run it:
//   transfer (stage 1): each converted layer computes the teacher's softmax output y_true and the
//     student's hybrid output y_pred from the same q, k, v; the loss is
//       1000 * mean over converted layers of MSE(y_pred, y_true)      (per-head, pre-Wo outputs)
//     and the layer passes Wo y_true on (teacher forcing), so no gradient crosses layers and each
//     layer's graph can be differentiated and freed as soon as it is built.
//   student (inference, stage 2): converted layers use the hybrid attention.
// Checkpoints of the new parameters use the reference implementation's names, so a PyTorch user of
// the reference can load them:
//   model.layers.{i}.self_attn.feature_map_q.mlp.layer   (H, D, Fh)
//   model.layers.{i}.self_attn.feature_map_k.mlp.layer   (H, D, Fh)
//   model.layers.{i}.self_attn.window_factors            (1, H, 1, 1)   logits; g = sigmoid
#pragma once
#include <string>
#include <vector>

#include "lolcats/hybrid_attention.h"
#include "nn/llama.h"

namespace lolcats {

struct LolcatsConfig {
  HybridVariant variant = HybridVariant::terrace;
  int feature_half = 64;                   // Fh; F = 2 Fh (capped at the head dim D)
  float window_logit_init = -2.1972245773f;  // logit(0.1)
  std::vector<int> softmax_layers;         // layers left as softmax attention
};

struct LolcatsLayer {
  bool converted = false;
  Var wq_fm;   // (H, D, Fh)
  Var wk_fm;   // (H, D, Fh)
  Var wlogit;  // (H)
};

struct TransferResult {
  float loss = 0;                // 1000 * mean layer MSE
  std::vector<float> layer_mse;  // (L) per converted layer, 0 for softmax layers
  Var logits;                    // the teacher's logits (B*T, V), when asked for
};

class LolcatsModel {
 public:
  LolcatsModel(const Llama& base, const LolcatsConfig& cfg);

  // Stage 1. With backward_scale > 0, every layer's share of the loss is differentiated at once,
  // d(backward_scale * loss), accumulating into the feature-map and window-factor gradients
  // (backward_scale = 1 / gradient-accumulation steps). The teacher's logits (what teacher forcing
  // leaves unchanged) are computed only when `logits` is set.
  TransferResult forward_transfer(const Tensor& ids, float backward_scale, bool logits = false) const;
  // Student forward: logits (B*T, V).
  Var forward(const Tensor& ids) const;

  std::vector<Var> parameters() const;  // feature maps and window factors of converted layers
  std::vector<std::pair<std::string, Var>> named_parameters() const;  // reference names
  // The same as tensors in the reference's shapes (window_factors as (1, H, 1, 1)).
  std::vector<std::pair<std::string, Tensor>> named_tensors() const;
  void save(const std::string& path) const;                          // safetensors, atomic
  void load(const std::string& path);                                // same names and shapes

  const Llama& base;
  LolcatsConfig cfg;
  std::vector<LolcatsLayer> layers;
  int Fh = 0;

  // The student's attention of one layer (used by forward and by recurrent prefill).
  Var student_attention(int layer, const Var& q, const Var& k, const Var& v) const;
};

}  // namespace lolcats
