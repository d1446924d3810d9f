// A Llama-family transformer (Llama 2/3/3.1, Mistral, SmolLM2) on the autograd tape, as pieces
// that a program puts together in its own loop. Llama::forward is the plain loop:
//
//   x = embed(ids)                                                   (B, T, C)
//   rope = rope_tables(T)                                            once, for every layer
//   for each layer l:
//     q, k, v = attention_inputs(l, x, rope)   rmsnorm; q, k, v = a Wq^T, a Wk^T, a Wv^T; RoPE
//     y = attention(q, k, v)                   GQA, causal softmax       (B, T, H, D)
//     x = attention_residual(l, x, y)          x + Wo y
//     x = mlp_residual(l, x)                   x + Wdown (silu(m Wgate^T) * (m Wup^T)), m = rmsnorm(x)
//   logits = logits(x)                         rmsnorm(x) Wlm^T          (B*T, V)
//
// LoLCATs writes its own loops from the same pieces: stage 1 (lolcats/stages.cpp) puts the
// teacher's and the student's attention side by side in each layer, the student
// (lolcats/model.h) the hybrid attention in place of softmax attention.
// PyTorch: transformers' LlamaForCausalLM, which the tests compare against.
//
// All frozen weights live in one Arena ("weights"); each is a leaf Var without gradient unless
// made trainable. Weights use Hugging Face's layout: RoPE pairs are half-split, and the q/k rows
// of GGUF files (which llama.cpp's converter permutes to the interleaved layout) are permuted back
// on load, so a checkpoint of either kind gives the same tensors.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "autograd/ops.h"
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

// RoPE's cos and sin tables (T, D/2 each) for positions 0 .. T-1, on the weights' device: built once
// per forward and read by every layer.
struct RopeTables {
  Tensor cos, sin;
};

// One layer's attention inputs: q (B, T, H, D) and k (B, T, Hkv, D) rotated by RoPE, v (B, T, Hkv, D).
struct AttentionInputs {
  Var q, k, v;
};

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

  // ---- the pieces of a forward, in the order the loop runs them (each on the tape) ----------------
  // Token ids (B, T) i32, on any device (copied to the weights') -> x (B, T, C).
  Var embed(const Tensor& ids) const;
  RopeTables rope_tables(int T) const;
  // a = rmsnorm(x); q, k, v = a Wq^T, a Wk^T, a Wv^T (each + its LoRA); rope(q), rope(k).
  AttentionInputs attention_inputs(int layer, const Var& x, const RopeTables& rope) const;
  // x + Wo y (+ LoRA), with y (B, T, H, D) the layer's attention output.
  Var attention_residual(int layer, const Var& x, const Var& y) const;
  // x + Wdown (silu(m Wgate^T) * (m Wup^T)),  m = rmsnorm(x).
  Var mlp_residual(int layer, const Var& x) const;
  // One whole layer with causal softmax attention: the three pieces above around attention().
  Var layer(int layer, const Var& x, const RopeTables& rope) const;
  // The last hidden states x (B, T, C) -> logits (B*T, V) = rmsnorm(x) Wlm^T.
  Var logits(const Var& x) const;
  // The mean next-token cross-entropy of rmsnorm(x) Wlm^T against targets (B*T) i32 (-100: ignored),
  // the LM head fused into the loss (lm_head_cross_entropy: on the cuda device the (B*T, V) logits
  // are never whole in memory).
  Var loss(const Var& x, const Tensor& targets) const;
  // The trainable weights layer `l` reads (its LoRA, any weight made trainable): what a recomputed
  // layer must name to checkpoint().
  std::vector<Var> trainable_in_layer(int l) const;

  // ---- the plain loop over them (the diagram at the top of this file) ---------------------------
  // ids (B, T) i32 -> the last hidden states (B, T, C), each layer recomputed in the backward with
  // Recompute::layers (autograd/ops.h).
  Var hidden(const Tensor& ids, Recompute recompute = Recompute::no) const;
  // ids (B, T) i32 -> logits (B*T, V). (Generation: nn/decoder.h.)
  Var forward(const Tensor& ids) const { return logits(hidden(ids)); }
  // The loss of ids (B, T) against targets (B*T) (see loss()).
  Var forward_loss(const Tensor& ids, const Tensor& targets, Recompute recompute = Recompute::no) const {
    Tensor t = step_targets(targets);  // before the step's first kernel, so the upload need not wait
    return loss(hidden(ids, recompute), t);
  }
  // targets (B*T) i32 checked on the host and on this model's device (checked_targets).
  Tensor step_targets(const Tensor& targets) const;

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

  LlamaConfig cfg;
  Var wte;      // (V, C)
  std::vector<LlamaLayer> layers;
  Var norm;     // (C)
  Var lm_head;  // (V, C); the same Var as wte when embeddings are tied

 private:
  std::unique_ptr<Arena> arena_;
};

// Permutes the rows of a q or k projection w (n_heads*D, C), CPU f32, between llama.cpp's GGUF
// layout (interleaved rotary pairs) and Hugging Face's (half-split). `to_hf` selects the direction.
void permute_qk_rows(Tensor& w, int n_heads, int D, bool to_hf);

}  // namespace lolcats
