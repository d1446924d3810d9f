// Inference through one interface, for both models and both devices: a Decoder advances a batch of
// sequences step by step. Every user of decoding drives it: generation (nn/generate.h), serving
// many prompts (./generate --prompts), log-likelihood scoring (nn/eval/loglik.h), passkey retrieval
// (nn/eval/passkey.h) and ./bench generate.
//
//   reserve(batch, max_len)            state for `batch` empty sequences
//   step(tokens, n, logits)            sequence b takes n[b] >= 0 new tokens: a prompt's chunk
//                                      (prefill), one token (decode), or nothing, all in one step
//   copy(from, to)                     sequence `to` continues from `from`'s state (shared
//                                      prefixes, state snapshots)
//   reset(b)                           sequence b starts over
//
// One step, for the step's rows X (R, d_model), R = sum n[b], every row at its own position:
//
//   X = embed(tokens)                                                   DecodeTrunk
//   for each layer l:
//     q, k, v = RoPE(rmsnorm(X) Wq^T, Wk^T, Wv^T)                       DecodeTrunk
//     y = attention of each row over its sequence's memory               DecodeMemory
//     X += y Wo^T;  X += MLP(rmsnorm(X))                                DecodeTrunk
//   logits = rmsnorm(X) Wlm^T, of each sequence's last new row (or of every row)
//
// The same math as Llama::forward (nn/llama.h), which the tests hold it to, position by position.
// Two parts vary, and the decoder is built from one of each:
//   the trunk, where the weights are: plain code on the CPU (nn/decode.h: f32 or bf16 weights, an
//     unmerged LoRA applied, no allocation once warm), or the op layer on the cuda device
//     (nn/decode_device.h: the LoRA merged first);
//   the memory, what each layer's attention keeps per sequence: a KV cache (nn/kv_cache.h: the
//     Llama, and layers a linearized model keeps as softmax), or the LoLCATs recurrent state
//     (lolcats/recurrent.h, on the CPU; lolcats/recurrent_device.h, its CUDA twin).
// make_decoder picks them: nn/kv_cache.h for a Llama, lolcats/recurrent.h for a linearized model.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "nn/llama.h"

namespace lolcats {

// Which logits a step returns: each sequence's last new row, or every new row.
enum class Logits { last_row, every_row };

// One step's rows, sequence after sequence: sequence b's n[b] new tokens are rows
// first[b] .. first[b]+n[b]-1, at positions length[b] .. length[b]+n[b]-1.
struct StepRows {
  int R = 0;
  std::vector<int> n, first, length;  // (batch) new rows, first row, tokens held before the step
  std::vector<int32_t> seq, pos;      // (R) each row's sequence and position
  Tensor seq_t, pos_t;                // the same two as i32 tensors on the model's device
};

// What a decoder keeps per sequence for its layers' attention, and how a layer attends with it.
class DecodeMemory {
 public:
  virtual ~DecodeMemory() = default;
  virtual void reserve(int batch, int max_len) = 0;           // every sequence empty
  virtual size_t sequence_bytes(int max_len) const = 0;       // one sequence's state (to size batches)
  virtual size_t bytes() const = 0;                           // what reserve() allocated
  // Whether max_len bounds a sequence (a KV cache does; a recurrent state alone does not).
  virtual bool bounded() const = 0;
  virtual void begin_step(const StepRows&) {}
  // y (R, H, D) from the step's q (R, H, D) post-RoPE and k, v (R, Hkv, D) of layer `layer`, on the
  // model's device; the memory takes in the rows' keys and values.
  virtual void attend(int layer, Tensor& y, const Tensor& q, const Tensor& k, const Tensor& v,
                      const StepRows& rows) = 0;
  virtual void end_step(const StepRows&) {}
  virtual void reset(int b) = 0;
  virtual void copy(int from, int to, int length) = 0;  // `length`: the tokens `from` holds
  // Takes sequence b to hold P tokens whose keys, values and state are whatever the buffers hold:
  // for benchmarks, where a step's time depends on the length and not on the values.
  virtual void assume_length(int b, int P) = 0;
};

// The Llama's part of a step, everything but attention, on one device.
class DecodeTrunk {
 public:
  struct Rows {
    Tensor q, k, v, y;  // (R, H, D), (R, Hkv, D) twice, (R, H, D): this layer's, on the model's device
  };
  virtual ~DecodeTrunk() = default;
  virtual void embed(const int32_t* tokens, const StepRows& rows) = 0;  // and each row's RoPE angles
  virtual Rows attention_inputs(int layer) = 0;                         // rmsnorm, q/k/v (+ LoRA), RoPE
  virtual void finish_layer(int layer) = 0;                             // X += y Wo^T; X += MLP
  // Host f32 logits: each sequence's last new row at out + b V (sequences without rows untouched),
  // or every row, (R, V).
  virtual void logits(float* out, const StepRows& rows, Logits which) = 0;
};

class Decoder {
 public:
  Decoder(const Llama& model, std::unique_ptr<DecodeMemory> memory);

  void reserve(int batch, int max_len);
  // tokens: sum n[b] ids, sequence after sequence. Writes the logits the step is asked for (host,
  // f32): with Logits::last_row those of each sequence with n[b] > 0 to logits + b * V; with
  // Logits::every_row those of every new row, (sum n[b], V), in the order of `tokens`.
  void step(const int32_t* tokens, const int* n, float* logits, Logits which = Logits::last_row);
  void copy(int from, int to);  // sequence `to` becomes a copy of `from`
  void reset(int b);            // sequence b starts over

  int batch() const { return int(length_.size()); }
  int max_len() const { return max_len_; }
  int vocab() const { return model_.cfg.vocab; }
  int length(int b) const { return length_[size_t(b)]; }
  size_t sequence_bytes(int max_len) const { return memory_->sequence_bytes(max_len); }
  size_t state_bytes() const { return memory_->bytes(); }
  void assume_length(int b, int P);  // benchmarks (DecodeMemory::assume_length)
  DecodeMemory& memory() { return *memory_; }

 private:
  const Llama& model_;
  std::unique_ptr<DecodeTrunk> trunk_;
  std::unique_ptr<DecodeMemory> memory_;
  std::vector<int> length_;  // (batch) tokens in each sequence
  int max_len_ = 0;
  StepRows rows_;
};

// The trunk for where the model's weights are (nn/decode.h on the CPU, nn/decode_device.h there).
std::unique_ptr<DecodeTrunk> make_decode_trunk(const Llama& model);

// A Llama's decoder: a KV cache in every layer.
std::unique_ptr<Decoder> make_decoder(const Llama& model);

}  // namespace lolcats
