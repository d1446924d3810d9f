// The LoLCATs reference implementation's own checkpoints (HazyResearch/lolcats, LOLCATS.md section 8),
// read with data/torch_pt.h, for `./eval --linearized` and `./generate --linearized`:
//
//   ./generate --model BASE --linearized A_distill.pt[,B_ft.pt] --prompt "..."
//
// A_distill.pt (stage 1): torch.save({'model_state_dict': ...}) of the trainable parameters
//   model.layers.{i}.self_attn.feature_map_q.mlp.layer   (H, D, Fh)     Hedgehog; T2R (H, D, D)
//   model.layers.{i}.self_attn.feature_map_k.mlp.layer   (H, D, Fh)
//   model.layers.{i}.self_attn.feature_map_{q,k}.mlp.bias  T2R only: (1, H, 1, 1) as the reference
//                                                          keeps it (one bias per head), or (H, D)
//   model.layers.{i}.self_attn.window_factors            (1, H, 1, 1)   logits; g = sigmoid
// B_ft.pt (stage 2): the same for the LoRA under peft's parameter names,
//   base_model.model.model.layers.{i}.self_attn.{q,k,v,o}_proj.lora_A.default.weight  (r, in)
//   base_model.model.model.layers.{i}.self_attn.{q,k,v,o}_proj.lora_B.default.weight  (out, r)
// Names are matched with or without the "base_model.model." prefix and the ".default" adapter
// name, so a checkpoint from either stage may hold either kind of tensor (the "fqkvo" fine-tunes
// also train the feature maps); files are read in order and a later one overrides an earlier one.
// Any other tensor is an error (as the reference's loader refuses unexpected keys).
//
// The files do not record the base model, so BASE (--model) is required and every shape is checked
// against it. From the files: the layers that have feature maps (the others stay softmax
// attention), Hedgehog or T2R (T2R has biases), Fh, the LoRA's rank and targets (the same on every
// layer). Not in the files, so from ReferenceOptions: the attention variant (default terrace, the
// published `lolcats_llama_window_tk` with its 64-token window; `sw` is
// `lolcats_llama_window_sw`, `linear` is no window) and the LoRA alpha (default 16: every published
// fine-tune used r 8, alpha 16). The window is 64 tokens (kHybridBlock), as in all published
// configs; the feature map's eps is 1e-12 as theirs.
#pragma once
#include <string>

#include "lolcats/hybrid_attention.h"

namespace lolcats {

struct LinearizedModel;

struct ReferenceOptions {
  HybridVariant variant = HybridVariant::terrace;  // what .pt checkpoints do not record
  float lora_alpha = 16.0f;
  AttentionMask mask = AttentionMask::paper;  // for any linearized model: where terrace's blocks lie
};

// Whether --linearized names reference checkpoints: one path or a comma-separated list of paths,
// each ending in ".pt" or ".pth".
bool is_reference_checkpoint(const std::string& spec);

// Loads the base model at `base_model` and the checkpoints in `spec` onto it.
LinearizedModel load_reference_checkpoints(const std::string& spec, const std::string& base_model,
                                           const ReferenceOptions& options = {});

}  // namespace lolcats
