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
#pragma once
#include <cstdint>
#include <vector>

#include "nn/llama.h"

namespace lolcats {

struct LlamaDecodeState {
  LlamaDecodeState(const LlamaConfig& cfg, int batch, int max_len);
  int batch, max_len;
  std::vector<int> length;  // (batch) tokens already in each sequence's cache
  std::vector<float> k, v;  // (L, batch, max_len, Hkv, D): post-RoPE keys, values
  // Scratch, grown to the largest step seen.
  std::vector<float> x, a, q, kn, vn, y, g, u, cos_t, sin_t, probs, last, logits_rows, wnorm;
  std::vector<int32_t> row_seq, row_pos;
  void reset(int b) { length[size_t(b)] = 0; }  // sequence b starts over
};

// Feeds tokens (sum n[b] ids, sequence after sequence) to the batch; for every sequence with
// n[b] > 0 writes the logits of its last new token to logits + b * V (other rows are untouched).
// CPU; the weights in f32, or in bf16 (Llama::to(Device::cpu, DType::bf16): half the bytes to read
// per token, widened to f32 block by block; all arithmetic stays f32).
void llama_decode_step(const Llama& model, LlamaDecodeState& state, const int32_t* tokens,
                       const int* n, float* logits);

}  // namespace lolcats
