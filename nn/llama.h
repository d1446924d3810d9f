// A Llama-family transformer (Llama 2/3/3.1, Mistral, SmolLM2) on the autograd tape.
//
//   x = wte[ids]                                                     (B, T, C)
//   for each layer:
//     a = rmsnorm(x) ; q, k, v = a Wq^T, a Wk^T, a Wv^T ; rope(q), rope(k)
//     x = x + Wo attention(q, k, v)                                  GQA, causal
//     m = rmsnorm(x) ; x = x + Wdown (silu(m Wgate^T) * (m Wup^T))   SwiGLU
//   logits = rmsnorm(x) Wlm^T                                        (B*T, V)
// PyTorch: transformers' LlamaForCausalLM, which the tests compare against.
//
// All frozen weights live in one Arena ("weights"); each is a leaf Var without gradient unless
// made trainable. Weights use Hugging Face's layout: RoPE pairs are half-split, and the q/k rows
// of GGUF files (which llama.cpp's converter permutes to the interleaved layout) are permuted back
// on load, so a checkpoint of either kind gives the same tensors.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "nn/llama_config.h"
#include "nn/lora.h"
#include "tensor/arena.h"

namespace lolcats {

struct LlamaLayer {
  Var attn_norm;  // (C)
  Var wq;         // (H*D, C)
  Var wk;         // (Hkv*D, C)
  Var wv;         // (Hkv*D, C)
  Var wo;         // (C, H*D)
  Var mlp_norm;   // (C)
  Var w_gate;     // (FF, C)
  Var w_up;       // (FF, C)
  Var w_down;     // (C, FF)
  Lora lora_q, lora_k, lora_v, lora_o;  // inactive unless add_lora() was called
};

// Stands in for softmax attention inside every layer (LoLCATs does this):
// q (B, T, H, D) post-RoPE, k and v (B, T, Hkv, D) -> y (B, T, H, D).
using AttentionFn = std::function<Var(int layer, const Var& q, const Var& k, const Var& v)>;

class Llama {
 public:
  // Weights allocated (uninitialised) in one arena on `device`, stored in `dtype`.
  explicit Llama(const LlamaConfig& cfg, Device device = Device::cpu, DType dtype = DType::f32);
  // A Hugging Face folder (config.json + model.safetensors or sharded index) or a .gguf file,
  // loaded tensor by tensor straight into the weights' arena on `device` in `dtype`: a bf16
  // checkpoint goes to a bf16 device arena as it is stored (no f32 copy of the model in host
  // memory, which for Llama 3 8B would be 32 GB); other formats are converted one tensor at a time.
  static std::unique_ptr<Llama> load(const std::string& path, Device device = Device::cpu,
                                     DType dtype = DType::f32);

  // ids (B, T) i32 -> logits (B*T, V). (Generation with a KV cache: nn/decode.h.)
  Var forward(const Tensor& ids) const;
  // The same with `attention` in place of softmax attention; token positions start at start_pos.
  // Without `logits`, stops after the last layer and returns its hidden states (B, T, C): attention
  // transfer needs no language-model head.
  Var forward_with(const Tensor& ids, const AttentionFn& attention, int start_pos = 0,
                   bool logits = true) const;

  // The mean next-token cross-entropy of ids (B, T) against targets (B*T) i32 (-100: ignored),
  // with the LM head fused into the loss (lm_head_cross_entropy: on the cuda device the (B*T, V)
  // logits are never whole in memory). With `attention`, as forward_with.
  Var forward_loss(const Tensor& ids, const Tensor& targets, const AttentionFn* attention = nullptr) const;

  // Merges every attached LoRA into its weight (W += scale B A, in the weight's dtype) and detaches
  // it: the model computes the same function with plain weights (what decoding on the GPU needs).
  void merge_loras();

  // Moves every weight to `device`, stored in `dtype` (the GPU's mixed precision keeps frozen
  // weights in bf16), into one allocation there; the old storage is released. Call before adding
  // LoRA. Token ids given to forward() may live anywhere: they are copied to the weights' device.
  void to(Device device, DType dtype);
  Device device() const { return wte->value.device(); }
  std::string memory_report() const { return arena_->report(); }  // the weights' arena
  DType dtype() const { return wte->value.dtype(); }

  std::vector<Var> parameters() const;  // every weight, in a fixed order
  std::vector<std::pair<std::string, Var>> named_parameters() const;  // Hugging Face names
  void set_requires_grad(bool on);
  // Adds LoRA (rank r, scale alpha / r) to the projections named in `targets` ("q", "k", "v", "o")
  // of every layer; returns the new trainable parameters with their peft names. Each site's A is
  // drawn from its own stream, lora_seed(seed, its lora_A name): reproducible, never shared. They
  // live beside the weights, in the weights' dtype.
  std::vector<std::pair<std::string, Var>> add_lora(int rank, float alpha,
                                                    const std::vector<std::string>& targets,
                                                    uint64_t seed);

  // Activation recomputation: while gradients are recorded, keep only each layer's input and run
  // the layer again in the backward (autograd/ops.h checkpoint), so one layer's activations are
  // alive at a time instead of all of them. Same gradients, about a third more compute. Stage 2 on
  // the GPU turns it on (the memory plan, lolcats/memory_plan.h, counts on it). Not for attention
  // transfer: its per-layer backward runs inside the forward, which recomputation runs gradient-free.
  bool recompute_layers = false;

  LlamaConfig cfg;
  Var wte;      // (V, C)
  std::vector<LlamaLayer> layers;
  Var norm;     // (C)
  Var lm_head;  // (V, C); the same Var as wte when embeddings are tied

 private:
  std::unique_ptr<Arena> arena_;
  // The logits (B*T, V), or (!logits) the last layer's hidden states (B, T, C).
  Var forward_impl(const Tensor& ids, const AttentionFn* attention, int start, bool logits) const;
  Var trunk(const Tensor& ids, const AttentionFn* attention, int start) const;
  Var attention_block(const LlamaLayer& l, const Var& a, int B, int T, int start,
                      const AttentionFn* attention, int layer) const;
  Var layer_forward(int layer, const Var& x, int B, int T, int start, const AttentionFn* attention) const;
};

// Permutes the rows of a q or k projection w (n_heads*D, C), CPU f32, between llama.cpp's GGUF
// layout (interleaved rotary pairs) and Hugging Face's (half-split). `to_hf` selects the direction.
void permute_qk_rows(Tensor& w, int n_heads, int D, bool to_hf);

}  // namespace lolcats
