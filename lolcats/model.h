// A Llama converted to LoLCATs (LOLCATS.md 2-3): every attention layer, except those kept as
// softmax, gets feature maps for q and k (Hedgehog, or the T2R baseline) and per-head window
// factors; the base weights stay as they are (frozen unless made trainable).
//
// Two loops run it, built from the Llama's pieces (nn/llama.h):
//   stage 1, attention transfer (lolcats/stages.h): each converted layer computes the teacher's
//     softmax output and the student's hybrid output from the same q, k, v, and passes the
//     teacher's on (teacher forcing);
//   the student (forward, loss: inference and stage 2): converted layers use the hybrid attention
//     in place of softmax attention, everything else is the Llama's.
// Checkpoints of the new parameters use the reference implementation's names, so a PyTorch user of
// the reference can load them:
//   model.layers.{i}.self_attn.feature_map_q.mlp.layer   (H, D, Fh)    T2R: (H, D, F)
//   model.layers.{i}.self_attn.feature_map_k.mlp.layer   (H, D, Fh)    T2R: (H, D, F)
//   model.layers.{i}.self_attn.feature_map_{q,k}.mlp.bias                T2R only: (H, F)
//   model.layers.{i}.self_attn.window_factors            (1, H, 1, 1)   logits; g = sigmoid
// The file's metadata names the feature map; loading checks it.
#pragma once
#include <string>
#include <vector>

#include "lolcats/feature_map.h"
#include "lolcats/hybrid_attention.h"
#include "nn/llama.h"

namespace lolcats {

struct LolcatsConfig {
  HybridVariant variant = HybridVariant::terrace;
  FeatureMapKind feature_map = FeatureMapKind::hedgehog;
  int feature_half = 64;                   // Hedgehog's Fh; F = 2 Fh (Fh capped at the head dim D)
  float window_logit_init = -2.1972245773f;  // logit(0.1)
  std::vector<int> softmax_layers;         // layers left as softmax attention
  // Where terrace's blocks lie (lolcats/hybrid_attention.h): the paper's (aligned to token 0), or
  // the reference implementation's (aligned to the sequence's end), to score its checkpoints as
  // their authors did. An inference setting: not saved with the parameters.
  AttentionMask mask = AttentionMask::paper;
};

struct LolcatsLayer {
  bool converted = false;
  Var wq_fm;   // (H, D, Fh); T2R (H, D, F)
  Var wk_fm;   // (H, D, Fh); T2R (H, D, F)
  Var bq_fm;   // (H, F) T2R only
  Var bk_fm;   // (H, F) T2R only
  Var wlogit;  // (H)
};

class LolcatsModel {
 public:
  LolcatsModel(const Llama& base, const LolcatsConfig& cfg);

  // ---- the student, as the Llama's loop with hybrid attention in the converted layers ----------
  // One layer: the Llama's layer (nn/llama.h) with student_attention() in place of softmax attention.
  Var layer(int layer, const Var& x, const RopeTables& rope) const;
  // The last hidden states (B, T, C) of ids (B, T).
  Var hidden(const Tensor& ids, Recompute recompute = Recompute::no) const;
  // Logits (B*T, V).
  Var forward(const Tensor& ids) const;
  // The mean next-token cross-entropy of ids (B, T) against targets (B*T), through the fused
  // LM-head loss (Llama::loss: on the cuda device the logits are never whole). Stage 2 on the GPU
  // recomputes each layer in the backward (the memory plan, lolcats/memory_plan.h, counts on it).
  Var loss(const Tensor& ids, const Tensor& targets, Recompute recompute = Recompute::no) const;
  // The logits (rows, V) of the last `rows` positions of one sequence, without the tape and with
  // the LM head on those rows only (whole-sequence scoring: score_loglik_whole).
  std::vector<float> tail_logits(const std::vector<int32_t>& ids, int rows) const;
  // The hybrid attention of a converted layer, or softmax attention of a kept one:
  // q (B, T, H, D) post-RoPE, k and v (B, T, Hkv, D) -> y (B, T, H, D).
  Var student_attention(int layer, const Var& q, const Var& k, const Var& v) const;
  int converted_layers() const;

  // Moves the feature maps and window factors beside the base's weights on `device` (in f32, as
  // the LoLCATs ops read them on every device). Call after moving the base (Llama::to).
  void to(Device device);

  std::vector<Var> parameters() const;  // feature maps and window factors of converted layers
  std::vector<std::pair<std::string, Var>> named_parameters() const;  // reference names
  // The same as tensors in the reference's shapes (window_factors as (1, H, 1, 1)).
  std::vector<std::pair<std::string, Tensor>> named_tensors() const;
  void save(const std::string& path) const;                          // safetensors, atomic
  void load(const std::string& path);                                // same names and shapes

  const Llama& base;
  LolcatsConfig cfg;
  std::vector<LolcatsLayer> layers;
  int Fh = 0;  // Hedgehog: features per softmax
  int F = 0;   // features per head: 2 Fh (Hedgehog) or D (T2R)

  // Feature map of a converted layer on the tape: x (B, T, Hx, D) -> (B, T, H, F), for keys
  // (Hx = Hkv, the key map) or queries (Hx = H).
  Var features(int layer, const Var& x, bool key) const;
  // The same without the tape or any allocation, for decoding: query head h's features phi (F)
  // of x (D) (a query's head h, or the key head it reads); z: Fh scratch.
  void feature_head(float* phi, const float* x, int layer, int h, bool key, float* z) const;
};

}  // namespace lolcats
