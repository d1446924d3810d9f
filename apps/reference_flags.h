// The flags that go with `--linearized A_distill.pt[,B_ft.pt]` (the LoLCATs reference
// implementation's checkpoints), shared by ./eval and ./generate: what those files do not record.
#pragma once
#include <CLI/CLI.hpp>
#include <string>

#include "lolcats/reference_checkpoint.h"

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
}
