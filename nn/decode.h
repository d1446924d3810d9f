// Inference as plain code (llama2.c style): one step feeds new tokens to a batch of sequences and
// advances their KV caches, with no autograd graph and no allocation once the buffers have grown to
// the largest step. Each sequence b gets n[b] >= 0 new tokens per step, so the same step is the
// chunked prefill of a prompt (n = chunk), a decode step (n = 1), or both at once for sequences
// of different lengths. Every linear layer runs as one matrix product over all the step's rows,
// so the weights are read once per step for the whole batch.
//
//   per layer, for the step's rows X (R, C), R = sum n[b]:
//     A = rmsnorm(X);  Q, K, V = A Wq^T, A Wk^T, A Wv^T;  RoPE at each row's own position
//     K, V -> the sequence's cache;  Y = softmax(q k^T / sqrt(D)) v over its cache (causal)
//     X += Y Wo^T;  M = rmsnorm(X);  X += (silu(M Wg^T) * (M Wu^T)) Wd^T
//   logits of each sequence's last new row = rmsnorm(x) Wlm^T
// The same math as Llama::forward (nn/llama.h), which the tests hold it to, position by position.
// A layer may leave the KV cache to a caller-given attention (DecodeAttention): a linearized
// layer keeps a recurrent state instead (lolcats/recurrent.h), and reuses everything else here.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "nn/llama.h"

namespace lolcats {

struct LlamaDecodeState {
  // cached[l]: layer l attends by softmax over a KV cache kept here (default: every layer); the
  // others are computed by the DecodeAttention given to the step. max_len bounds a cached
  // sequence; with no cached layer it is no bound at all.
  LlamaDecodeState(const LlamaConfig& cfg, int batch, int max_len, std::vector<bool> cached = {});
  int batch, max_len;
  std::vector<int> length;  // (batch) tokens already in each sequence
  std::vector<int> cache_slot;  // (L) layer l's index into k and v, -1: no cache
  std::vector<float> k, v;  // (cached layers, batch, max_len, Hkv, D): post-RoPE keys, values
  // Scratch, grown to the largest step seen.
  std::vector<float> x, a, q, kn, vn, y, g, u, cos_t, sin_t, rstd, last, logits_rows, wnorm, low;
  std::vector<int32_t> row_seq, row_pos;
  std::vector<double> inv_freq;  // (D/2) RoPE speeds of the model's config
  void reset(int b) { length[size_t(b)] = 0; }  // sequence b starts over
  // Sequence `to` becomes a copy of sequence `from` (its length and cached keys and values), so
  // that several continuations of one prefix each go on from its state without recomputing it.
  void copy_sequence(int from, int to);
  // When set, a step writes the logits of every new row, not only each sequence's last one:
  // logits (sum n[b], V), rows in the order of `tokens` (scoring a continuation needs them all).
  bool every_row_logits = false;
  size_t cache_bytes() const { return (k.size() + v.size()) * sizeof(float); }
};

// The rows of a step, sequence after sequence: sequence b's n[b] new tokens sit at positions
// length[b] .. length[b]+n[b]-1. Fills row_seq and row_pos (R each) and returns R; with `bounded`,
// checks that every sequence stays within max_len. (Shared by nn/decode_device.h.)
int plan_rows(const std::vector<int>& length, const int* n, int max_len, bool bounded, std::vector<int32_t>& row_seq,
              std::vector<int32_t>& row_pos);

// A layer's attention when it has no KV cache: y (R, H, D) from the step's post-RoPE q (R, H, D),
// k, v (R, Hkv, D). Row r is position state.row_pos[r] of sequence state.row_seq[r]; rows of one
// sequence are consecutive and in order.
using DecodeAttention =
    std::function<void(int layer, float* y, const float* q, const float* k, const float* v, int R)>;

// Feeds tokens (sum n[b] ids, sequence after sequence) to the batch; for every sequence with
// n[b] > 0 writes the logits of its last new token to logits + b * V (other rows are untouched),
// or, with state.every_row_logits, the logits of every new token to logits (sum n[b], V).
// CPU; the weights in f32, or in bf16 (Llama::to(Device::cpu, DType::bf16): half the bytes to read
// per token, widened to f32 block by block; all arithmetic stays f32). An active LoRA adds its
// low-rank term, (alpha / r) (x A^T) B^T, to its projection (or merge it first: merge_lora).
void llama_decode_step(const Llama& model, LlamaDecodeState& state, const int32_t* tokens,
                       const int* n, float* logits, const DecodeAttention& attention = {});

}  // namespace lolcats
