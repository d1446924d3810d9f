// The shape of a Llama-family model, read from a Hugging Face config.json or from GGUF metadata.
// One struct for Llama 2/3/3.1, Mistral and SmolLM2: they differ only in these numbers.
#pragma once
#include <cstdint>
#include <string>

#include "tensor/rope.h"

namespace lolcats {

class GGUFFile;

struct LlamaConfig {
  std::string arch = "llama";  // "llama" or "mistral" (same computation here)
  int vocab = 0;               // V
  int d_model = 0;             // C
  int n_layers = 0;            // L
  int n_heads = 0;             // H
  int n_kv_heads = 0;          // Hkv (GQA: H % Hkv == 0)
  int head_dim = 0;            // D (usually C / H)
  int ffn = 0;                 // FF, SwiGLU hidden size
  float norm_eps = 1e-5f;
  RopeConfig rope;
  bool tied_embeddings = false;  // lm_head shares the embedding table
  int max_position = 0;
  int bos_id = -1, eos_id = -1;

  // ENSUREs the numbers fit together (divisibility, positivity), naming `source` in the message.
  void validate(const std::string& source) const;
  std::string summary() const;  // "llama: L=30 C=576 H=9/3 D=64 FF=1536 V=49152 ..."
};

LlamaConfig config_from_hf_json(const std::string& config_json_path);
// The published shapes, by name, for benchmarks and memory plans without a checkpoint: smollm2-135m,
// llama3.2-1b, llama3-8b, llama3.1-8b, mistral-7b (v0.1), llama3-70b, and `toy` (no real model: the
// benches' smoke runs under the emulator). An unknown name is an error listing these.
LlamaConfig named_config(const std::string& name);
// Weights of a model of this shape: embeddings (twice unless tied), per layer the four attention
// projections, three MLP matrices and two norms, and the final norm.
int64_t parameter_count(const LlamaConfig& c);
LlamaConfig config_from_gguf(const GGUFFile& f);
// The config of a model path as Llama::load reads it (a Hugging Face folder's config.json, or a
// .gguf file's header), without reading any weight.
LlamaConfig config_from_model(const std::string& path);

}  // namespace lolcats
