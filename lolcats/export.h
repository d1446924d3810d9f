// The artifact of ./linearize, and loading it back (for ./generate and ./eval).
//
// One safetensors file in the reference implementation's names:
//   model.layers.{i}.self_attn.feature_map_q.mlp.layer   (H, D, Fh)      always (T2R: (H, D, F))
//   model.layers.{i}.self_attn.feature_map_k.mlp.layer   (H, D, Fh)      always (T2R: (H, D, F))
//   model.layers.{i}.self_attn.feature_map_{q,k}.mlp.bias (H, F)         T2R only
//   model.layers.{i}.self_attn.window_factors            (1, H, 1, 1)    always
// and, when stage 2 ran, the LoRA in one of two forms:
//   separate: model.layers.{i}.self_attn.{q,k,v,o}_proj.lora_{A,B}.weight  (peft names; small file,
//             the base model's weights are read from the base checkpoint)
//   merged:   every weight of the model in Hugging Face names, with W + (alpha / r) B A in place of
//             each adapted projection (the whole final model; no LoRA left)
// The metadata records how to rebuild the model: the base checkpoint (config and tokenizer come
// from it), the attention variant, the feature map (hedgehog or t2r), Fh, the layers kept as
// softmax, the LoRA form, rank, alpha and targets, and the base's config summary, which must
// match on load.
#pragma once
#include <memory>
#include <string>

#include "lolcats/model.h"
#include "lolcats/recurrent.h"
#include "lolcats/reference_checkpoint.h"

namespace lolcats {

enum class LoraExport { separate, merged };
LoraExport parse_lora_export(const std::string& name);  // "separate", "merged"

// Writes the model (atomically). `base_model` is the path the base was loaded from.
void export_linearized(const std::string& path, const LolcatsModel& model, LoraExport lora,
                       const std::string& base_model);

struct LinearizedModel {
  std::unique_ptr<Llama> base;          // with the LoRA attached (separate) or merged in
  std::unique_ptr<LolcatsModel> model;  // refers to *base; null for a plain model (see below)
  std::string base_model;               // the checkpoint the base was read from
};

// Loads an export; `base_model` overrides the path recorded in it (when the run folder moved).
LinearizedModel load_linearized(const std::string& path, const std::string& base_model = "");

// What the apps run: the export at `linearized` when it is not empty (its base from `model_path`
// when `base_given`, else from the path recorded in it), otherwise the plain model at `model_path`
// (then `model` is null and `base` is the model). A `linearized` of .pt files ("A_distill.pt" or
// "A_distill.pt,B_ft.pt") is the reference implementation's checkpoints
// (lolcats/reference_checkpoint.h): their base must be given, and `reference` supplies what they do
// not record.
LinearizedModel load_for_inference(const std::string& linearized, const std::string& model_path,
                                   bool base_given, const ReferenceOptions& reference = {});

// Puts the weights on `device` in `dtype` (the feature maps and window factors always in f32). A
// LoRA still attached (a separate export) is merged into its f32 weights first: weights stored in
// another dtype cannot carry it, and the device's decode step takes plain weights.
void place_weights(LinearizedModel& m, Device device, DType dtype);

// The model's decoder (nn/decoder.h): the recurrent one for a linearized model, in `mode`, the KV
// cache one for a plain model; on the device its weights are on. cache: the pairs per head kept beside
// the window (lolcats/sparse_cache.h), linearized models only.
std::unique_ptr<Decoder> make_decoder(const LinearizedModel& m, DecodeMode mode, SparseCacheConfig cache = {});

// Whether `path` is a file written by export_linearized (safetensors with LoLCATs metadata).
bool is_linearized_export(const std::string& path);

}  // namespace lolcats
