// The flags that go with `--linearized A_distill.pt[,B_ft.pt]` (the LoLCATs reference
// implementation's checkpoints), shared by ./eval and ./generate: what those files do not record,
// and how the reference ran them (its attention mask and its decoder).
#pragma once
#include <CLI/CLI.hpp>
#include <string>

#include "lolcats/recurrent.h"
#include "lolcats/reference_checkpoint.h"
#include "lolcats/sparse_cache.h"

inline void add_reference_flags(CLI::App& app, lolcats::ReferenceOptions& ref) {
  app.add_option_function<std::string>(
         "--reference-attention", [&ref](const std::string& name) { ref.variant = lolcats::parse_variant(name); },
         "with --linearized *.pt: the attention the checkpoints were trained with (terrace: "
         "lolcats_llama_window_tk, the published one; sw: lolcats_llama_window_sw; linear: no window)")
      ->check(CLI::IsMember({"terrace", "sw", "linear"}))
      ->default_str("terrace");
  app.add_option("--reference-lora-alpha", ref.lora_alpha,
                 "with --linearized *.pt: the LoRA alpha (scale alpha / r; the published fine-tunes used 16)")
      ->capture_default_str();
  app.add_option_function<std::string>(
         "--attention-mask", [&ref](const std::string& name) { ref.mask = lolcats::parse_attention_mask(name); },
         "linearized terrace models: paper (64-token blocks from the first token, LOLCATS.md) or reference (as "
         "the reference implementation's get_masks, which its published scores used: blocks end at the "
         "sequence's last token, and up to 64 tokens every key is in both the window and the linear term; "
         "zero-shot scoring then runs one whole forward per request, and decoding is --decode-mode reference)")
      ->check(CLI::IsMember({"paper", "reference"}))
      ->default_str("paper");
}

// The decode mode of a linearized model from its flag (`given`: on the command line). The reference
// mask implies the reference decoder, which prefills a prompt with that mask: decoding cannot
// follow blocks that end where the sequence ends, so an explicit exact mode is refused.
inline lolcats::DecodeMode resolve_decode_mode(const lolcats::ReferenceOptions& ref, const std::string& flag,
                                               bool given) {
  if (ref.mask == lolcats::AttentionMask::paper) return lolcats::parse_decode_mode(flag);
  ENSURE(!given || flag == "reference", "--attention-mask reference decodes as the reference does: "
         "--decode-mode %s cannot follow its blocks (they end at the sequence's last token)", flag.c_str());
  return lolcats::DecodeMode::reference;
}

// --sparse-cache G and --cache-sinks N for ./generate, ./eval and ./bench generate: a third memory
// per head of a linearized model (LOLCATS.md 9, lolcats/sparse_cache.h).
inline void add_sparse_cache_flags(CLI::App& app, lolcats::SparseCacheConfig& cache) {
  app.add_option("--sparse-cache", cache.pairs,
                 "linearized models: per head and layer, keep the G past key/value pairs that the linear state "
                 "recalls worst as exact softmax keys beside the window (LoLA, no training; 0 = the paper's layer). "
                 "Prompts are then prefilled by the recurrence, so scoring equals decoding")
      ->check(CLI::Range(0, lolcats::kMaxSparseCache))
      ->capture_default_str();
  app.add_option("--cache-sinks", cache.sinks,
                 "with --sparse-cache: the sequence's first N tokens always stay in the cache, whatever their recall "
                 "error (attention sinks; counted in G; ours, not LoLA's)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
}
